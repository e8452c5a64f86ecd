"""A private PostgreSQL cluster for when no DSN is configured (and for the test fixtures).

Uses the server binaries of Debian's `postgresql` package (`initdb`, `pg_ctl`). The cluster
listens only on a unix socket inside its own data directory (no TCP port, so no clash with any
other server), trusts local connections from its own socket, and has a superuser named `bot`.

`initdb` refuses to run as root. When we are root, every server command runs as the
unprivileged `postgres` user via `runuser`, the data directory is owned by that user, and if
the configured location is not reachable by it (e.g. under a 0700 /root) the cluster lives
under /var/lib/cryptobot instead (logged, stable per configured path).
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SUPERUSER = "bot"
DEFAULT_DB = "bot"
SMALL_MACHINE_SETTINGS = {
    # Sized for a 2-core, few-GB PC that also trains models (the whole bot -- daemon, this
    # cluster and a retrain child -- is meant to stay under 1.5 GB: bench/bench_retrain.py).
    # shared_buffers 128MB: the hot set is the last days of 1m candles for 30 symbols (~40 MB)
    #   plus the trading tables; training reads candles once, sequentially (binary COPY), where
    #   the OS page cache serves as well as a bigger buffer pool, and every backend that touches
    #   shared buffers shows them in its RSS.
    # max_connections 30: the daemon's pool (<= database.pool_max), its lock connection, a
    #   training child's 2, CLI commands and psql; each allowed connection reserves memory.
    # work_mem 16MB: per sort/hash node; our queries are keyed lookups and COPY, so this only
    #   bounds the occasional report query without letting 30 of them take 30 x 64 MB.
    "shared_buffers": "128MB",
    "max_connections": "30",
    "work_mem": "16MB",
    "maintenance_work_mem": "128MB",
    "effective_cache_size": "512MB",
    "wal_compression": "on",
    "max_wal_size": "1GB",
}
FAST_UNSAFE_SETTINGS = {
    # Tests only: durability off, speed on.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


class EmbeddedPostgresError(RuntimeError):
    pass


def find_pg_bin() -> Path:
    """Directory holding initdb/pg_ctl: $BOT_PG_BIN, then Debian's newest, then $PATH."""
    env = os.environ.get("BOT_PG_BIN")
    candidates = [Path(env)] if env else []
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0)
    candidates += [Path(p) for p in reversed(debian)]
    which = shutil.which("initdb")
    if which:
        candidates.append(Path(which).parent)
    for c in candidates:
        if (c / "initdb").exists() and (c / "pg_ctl").exists():
            return c
    raise EmbeddedPostgresError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found; run `make install` "
        "(installs Debian's postgresql package) or set BOT_PG_BIN"
    )


def _reachable_by(path: Path, user: pwd.struct_passwd) -> bool:
    """Can `user` traverse every existing ancestor of `path`? (Mode bits only; good enough here.)"""
    p = path.resolve()
    for parent in [p, *p.parents]:
        if not parent.exists():
            continue
        st = parent.stat()
        if st.st_uid == user.pw_uid:
            ok = st.st_mode & 0o100
        elif st.st_gid == user.pw_gid:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            return False
    return True


@dataclass
class EmbeddedPostgres:
    """One private cluster. `start()` is idempotent and reuses a cluster already running."""

    data_dir: Path
    dbname: str = DEFAULT_DB
    port: int = 5432
    fast_unsafe: bool = False
    log: Callable[[str], None] = field(default=lambda msg: None, repr=False)
    started_here: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).absolute()
        self.bin = find_pg_bin()
        self._run_as: list[str] = []
        if os.geteuid() == 0:
            try:
                self._pg_user = pwd.getpwnam("postgres")
            except KeyError:
                raise EmbeddedPostgresError(
                    "running as root needs the unprivileged 'postgres' user (created by Debian's postgresql package)"
                ) from None
            self._run_as = ["runuser", "-u", "postgres", "--"]
            if not _reachable_by(self.data_dir.parent if not self.data_dir.exists() else self.data_dir, self._pg_user):
                digest = hashlib.sha1(str(self.data_dir).encode()).hexdigest()[:12]
                moved = Path("/var/lib/cryptobot") / digest / "pgdata"
                self.log(f"db dir {self.data_dir} is not reachable by user postgres; using {moved}")
                self.data_dir = moved
        if len(str(self.socket_path)) > 100:
            raise EmbeddedPostgresError(
                f"data dir path too long for a unix socket ({self.socket_path}); choose a shorter paths.data_dir"
            )

    # -- paths and DSNs ---------------------------------------------------------------

    @property
    def socket_dir(self) -> Path:
        return self.data_dir

    @property
    def socket_path(self) -> Path:
        return self.socket_dir / f".s.PGSQL.{self.port}"

    def dsn(self, dbname: str | None = None) -> str:
        return f"postgresql://{SUPERUSER}@/{dbname or self.dbname}?host={self.socket_dir}&port={self.port}"

    # -- lifecycle --------------------------------------------------------------------

    def _cmd(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*self._run_as, *args], capture_output=True, text=True, timeout=timeout, cwd="/"
        )
        if check and proc.returncode != 0:
            raise EmbeddedPostgresError(
                f"{Path(args[0]).name} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-2000:]}"
            )
        return proc

    def _prepare_dir(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if self._run_as:
            self.data_dir.mkdir(mode=0o700, exist_ok=True)
            os.chown(self.data_dir, self._pg_user.pw_uid, self._pg_user.pw_gid)

    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def running(self) -> bool:
        if not self.initialised():
            return False
        return self._cmd(str(self.bin / "pg_ctl"), "status", "-D", str(self.data_dir), check=False).returncode == 0

    def init(self) -> None:
        self._prepare_dir()
        if self.initialised():
            return
        self.log(f"db initdb {self.data_dir}")
        self._cmd(
            str(self.bin / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-instructions",
        )  # fmt: skip
        settings = {
            "listen_addresses": "''",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "unix_socket_permissions": "0700",
            "port": str(self.port),
            **{k: v if v.isdigit() else f"'{v}'" for k, v in SMALL_MACHINE_SETTINGS.items()},
        }
        conf = "\n# cryptobot embedded cluster\n" + "".join(f"{k} = {v}\n" for k, v in settings.items())
        # Appending as root keeps the file's owner (postgres), so no runuser is needed here.
        with open(self.data_dir / "postgresql.conf", "a") as f:
            f.write(conf)

    def start(self) -> str:
        """Start (or reuse) the cluster, create the database, return its DSN."""
        self.init()
        if self.running():
            self.log(f"db reusing running cluster {self.data_dir}")
        else:
            opts = " ".join(f"-c {k}={v}" for k, v in FAST_UNSAFE_SETTINGS.items()) if self.fast_unsafe else ""
            args = [str(self.bin / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(self.data_dir),
                    "-l", str(self.data_dir / "server.log")]  # fmt: skip
            if opts:
                args += ["-o", opts]
            t0 = time.monotonic()
            self._cmd(*args)
            self.started_here = True
            self.log(f"db started in {time.monotonic() - t0:.1f}s ({self.data_dir})")
        self.create_database(self.dbname)
        return self.dsn()

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        proc = self._cmd(
            str(self.bin / "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
            "-h", str(self.socket_dir), "-p", str(self.port), "-U", SUPERUSER, "-d", dbname, "-c", sql,
        )  # fmt: skip
        return proc.stdout.strip()

    def create_database(self, name: str, template: str | None = None) -> None:
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        if exists != "1":
            tmpl = f" TEMPLATE {template}" if template else ""
            self.psql(f'CREATE DATABASE "{name}"{tmpl}')

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def other_clients(self) -> int:
        """Client connections other than the one asking (psql's own)."""
        return int(self.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        ) or 0)

    def stop_if_idle(self) -> bool:
        """Stop unless another process (e.g. the daemon while a CLI command ends) is connected."""
        if self.running() and self.other_clients() > 0:
            self.log(f"db left running: other clients connected ({self.data_dir})")
            return False
        self.stop()
        return True

    def stop(self) -> None:
        """Fast shutdown (clean: checkpoints, no recovery needed next start)."""
        if self.running():
            self._cmd(str(self.bin / "pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(self.data_dir))
            self.log(f"db stopped ({self.data_dir})")
        self.started_here = False
