"""The one config schema: every section in one pydantic model, loaded from YAML.

Each package owns the schema of its own section (`risk.config`, `models.config`,
`models.features.config`, `bot.marketdata.config`, `bot.engine.config`, `bot.training.config`, ...);
this module composes them, reads the file, merges secrets from the environment or a 0600 file,
moves keys that were renamed (`Config.notices` says which), and turns validation failures into one line
per problem naming the key path and the reason (`risk.max_positions: must be >= 1, got 0`).

Secrets are never read from the config file itself, never printed, and never part of
`model_dump()` output: they live in `Config.secrets` as `SecretStr`.
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import to_jsonable_python

from bot.config_checks import (
    MIN_FREE_MB,
    directory_problem,
    dsn_problem,
    listen_problem,
    standard_cron,
    telegram_chat_problem,
    telegram_token_problem,
)
from bot.engine.config import TradingConfig
from bot.execution.config import LiveConfig
from bot.marketdata.config import ExchangeConfig, FeedConfig
from bot.ops.chat.config import TelegramConfig
from bot.ops.dashboard.config import DashboardConfig
from bot.training.config import MOVED_KEYS, TrainingConfig
from models.config import CostConfig, LabelConfig, TrainConfig
from models.features.config import FeatureConfig
from risk.config import RiskConfig

DEFAULT_CONFIG_PATH = "config.yaml"
ENV_CONFIG = "BOT_CONFIG"
ENV_API_KEY = "BOT_API_KEY"
ENV_API_SECRET = "BOT_API_SECRET"
ENV_DSN = "BOT_DATABASE_DSN"
ENV_TELEGRAM_TOKEN = "BOT_TELEGRAM_TOKEN"
ENV_TELEGRAM_CHAT_ID = "BOT_TELEGRAM_CHAT_ID"

# The 30 most liquid Binance USDT spot pairs by quote volume at the time of writing (late 2026).
# Liquidity ranks drift: review this list before trading live. Tests and benchmarks use the
# historical list in ../shared/data/symbols30.txt instead.
DEFAULT_SYMBOLS: tuple[str, ...] = (
    "BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT", "DOGEUSDT", "ADAUSDT", "TRXUSDT",
    "LINKUSDT", "SUIUSDT", "AVAXUSDT", "LTCUSDT", "PEPEUSDT", "BCHUSDT", "DOTUSDT", "UNIUSDT",
    "NEARUSDT", "APTUSDT", "ARBUSDT", "OPUSDT", "WLDUSDT", "FETUSDT", "AAVEUSDT", "TONUSDT",
    "SHIBUSDT", "ENAUSDT", "HBARUSDT", "XLMUSDT", "FILUSDT", "ICPUSDT",
)  # fmt: skip


class ConfigError(Exception):
    """A config that cannot be used. `problems` holds one human line per problem."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        self.source = source
        head = f"invalid config {source}" if source else "invalid config"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in problems))


class DatabaseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dsn: SecretStr = Field(
        SecretStr(""),
        description="postgresql://... ; empty = start an embedded private cluster under paths.data_dir",
    )
    pool_min: int = Field(1, ge=1)
    pool_max: int = Field(4, ge=1, le=64)
    write_timeout_s: float = Field(
        15.0, ge=1, le=600,
        description="the daemon's store writes: no answer within this long = the store is unavailable (a stalled "
                    "server): the write is held and retried, entries pause (bot.store.outage)",
    )  # fmt: skip
    outage_buffer_minutes: int = Field(
        1440, ge=1, le=100_000,
        description="minutes of trading records (decisions, orders, fills, positions, equity) held in memory while "
                    "the store is unavailable; when full the daemon stops taking minutes until it answers, then catches up",
    )  # fmt: skip

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, v: SecretStr) -> SecretStr:
        problem = dsn_problem(v.get_secret_value().strip())
        if problem:
            raise ValueError(problem)
        return SecretStr(v.get_secret_value().strip())

    @model_validator(mode="after")
    def _pool_order(self) -> DatabaseConfig:
        if self.pool_max < self.pool_min:
            raise ValueError(f"pool_max ({self.pool_max}) must be >= pool_min ({self.pool_min})")
        return self


class PathsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    data_dir: Path = Path("var")
    models_dir: Path = Path("var/models")
    logs_dir: Path = Path("var/logs")

    @field_validator("data_dir", "models_dir", "logs_dir")
    @classmethod
    def _home(cls, v: Path) -> Path:
        """`~/cryptobot` means the home directory (YAML does not expand it; left as is it was a
        directory named `~` under the working directory)."""
        return v.expanduser()


class DaemonConfig(BaseModel):
    """The running daemon's own schedule; how a model is fitted is `train`, the training process `training`.

    The retrain time is a property of the daemon (when it starts a training job), not of the
    training (which `bot train` by hand uses too), so it lives here rather than in `train`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    retrain_cron: str = Field(
        "0 3 * * sat",
        description="crontab (minute hour day month weekday, UTC; weekdays 0-7 or sun..sat, 0 and 7 = Sunday) "
        "for retraining; empty = never",
    )  # fmt: skip
    retrain_misfire_grace_s: int = Field(
        6 * 3600, ge=1,
        description="a retrain whose time passed while the daemon was down or busy still runs if at most this "
        "late (then once only: missed runs are coalesced); later, it waits for the next cron time")  # fmt: skip
    retrain_eval_days: float = Field(
        3.0, gt=0,
        description="champion/challenger judging window: the last N days before the retrain, which the "
        "challenger is not trained on (its training data ends an embargo earlier)")  # fmt: skip
    promote_min_pf_gain: float = Field(0.05, description="a challenger's PF on the window must beat the champion's by this")
    promote_min_expectancy_gain: float = Field(
        0.0, description="... and its expectancy per trade (after costs, a fraction) the champion's by this")
    promote_min_trades: int = Field(30, ge=0, description="... with at least this many trades on the window")
    decisions_keep_days: float = Field(
        30.0, ge=0,
        description="skip decisions (one row per symbol and minute without an entry) older than this many days are "
        "deleted once a day; entries and exits are kept with the trades; 0 = keep everything")  # fmt: skip

    @field_validator("retrain_cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        """Read as a standard crontab and kept in the scheduler's spelling (`0 3 * * 6` becomes
        `0 3 * * sat`: APScheduler alone would have read a Sunday)."""
        if not v.strip():
            return ""
        try:
            return standard_cron(v.strip())
        except ValueError as e:
            raise ValueError(f"not a cron expression (minute hour day month weekday): {e}") from None


class PaperConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    initial_equity: float = Field(10_000.0, gt=0)


class LoggingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    level: Literal["debug", "info", "warning", "error"] = "info"
    json_file: str = Field("bot.jsonl", description="structlog JSON lines, under paths.logs_dir")
    human_file: str = Field("bot.log", description="short Telegram-style lines, under paths.logs_dir")
    console: bool = True
    max_mb: int = Field(20, ge=1, le=1024, description="rotate each log file at this size (MB)")
    backups: int = Field(5, ge=1, le=100, description="rotated files kept per log (bot.log.1 .. bot.log.N)")
    line_tag: str = Field("", max_length=16, pattern=r"^[A-Za-z0-9_.-]*$",
                          description="a short tag at the end of every human line, e.g. demo (make demo sets it)")  # fmt: skip

    @field_validator("json_file", "human_file")
    @classmethod
    def _file_name(cls, v: str) -> str:
        if not v or v in (".", "..") or "/" in v or "\\" in v or "\0" in v:
            raise ValueError(f"must be a plain file name (it is created under paths.logs_dir), got {v!r}")
        return v

    @model_validator(mode="after")
    def _distinct_files(self) -> LoggingConfig:
        if self.json_file == self.human_file:
            raise ValueError(f"json_file and human_file are both {self.json_file!r}: the two logs would write one file")
        return self


class Secrets(BaseModel):
    """API credentials. Only ever filled from the environment or a 0600 secrets file."""

    model_config = ConfigDict(frozen=True)

    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None
    telegram_token: SecretStr | None = None
    telegram_chat_id: SecretStr | None = None

    @property
    def complete(self) -> bool:
        return bool(self.api_key and self.api_key.get_secret_value()) and bool(
            self.api_secret and self.api_secret.get_secret_value()
        )


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["paper", "live"] = "paper"
    symbols: tuple[str, ...] = Field(DEFAULT_SYMBOLS, min_length=1, max_length=200)
    exchange: ExchangeConfig = ExchangeConfig()
    feed: FeedConfig = FeedConfig()
    database: DatabaseConfig = DatabaseConfig()
    paths: PathsConfig = PathsConfig()
    daemon: DaemonConfig = DaemonConfig()
    costs: CostConfig = CostConfig()
    risk: RiskConfig = RiskConfig()
    features: FeatureConfig = FeatureConfig()
    labels: LabelConfig = LabelConfig()
    train: TrainConfig = TrainConfig()
    training: TrainingConfig = TrainingConfig()
    paper: PaperConfig = PaperConfig()
    trading: TradingConfig = TradingConfig()
    live: LiveConfig = LiveConfig()
    logging: LoggingConfig = LoggingConfig()
    telegram: TelegramConfig = TelegramConfig()
    dashboard: DashboardConfig = DashboardConfig()
    secrets: Secrets = Field(default_factory=Secrets, exclude=True)
    _moved: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _moved_keys(cls, data: Any, handler: Any) -> Config:
        """Old configs stay readable: `daemon.retrain_nice` and the like are moved to `training.*`
        (`bot.training.config.MOVED_KEYS`), each said once in `notices`; both names at once is an error."""
        moved: list[str] = []
        daemon, training = (data.get("daemon"), data.get("training", {})) if isinstance(data, dict) else (None, None)
        if isinstance(daemon, dict) and isinstance(training, dict) and set(daemon) & set(MOVED_KEYS):
            daemon, training = dict(daemon), dict(training)
            clashes = []
            for old, new in MOVED_KEYS.items():
                if old not in daemon:
                    continue
                if new in training:
                    clashes.append(f"daemon.{old}: moved to training.{new}, which is set too; keep only training.{new}")
                    continue
                training[new] = daemon.pop(old)
                moved.append(f"daemon.{old} is now training.{new} (read from the old name; rename it in the config)")
            if clashes:
                raise ValueError("\n".join(clashes))
            data = {**data, "daemon": daemon, "training": training}
        cfg = handler(data)
        if moved:
            cfg._moved = tuple(moved)
        return cfg

    @property
    def notices(self) -> tuple[str, ...]:
        """Lines about the file that are not errors (a key read under its old name)."""
        return self._moved

    @field_validator("symbols", mode="before")
    @classmethod
    def _symbols_list(cls, v: Any) -> Any:
        if v is None:
            raise ValueError("must list at least 1 symbol")
        return v

    @field_validator("symbols")
    @classmethod
    def _symbols_format(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        out: list[str] = []
        for s in v:
            norm = s.replace("/", "").strip().upper()
            if not norm.isalnum() or len(norm) < 5:
                raise ValueError(f"{s!r} is not a symbol like BTCUSDT")
            if norm in out:
                raise ValueError(f"{norm} is listed twice")
            out.append(norm)
        return tuple(out)

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        """Contradictions between sections, one line each (key path first)."""
        quote = self.exchange.quote
        problems: list[str] = []
        bad = [s for s in self.symbols if not s.endswith(quote)]
        if bad:
            problems.append(f"symbols: {', '.join(bad)} do not end in the quote asset exchange.quote={quote}")
        # A reference need not be traded (the engine adds it as a feature-only row), but it is
        # fetched and streamed like a traded symbol, so it must be a symbol of the quote asset.
        bad_refs = [s for s in self.features.reference_symbols
                    if not (s.isalnum() and len(s) > len(quote) and s.endswith(quote))]  # fmt: skip
        if bad_refs:
            problems.append(f"features.reference_symbols: {', '.join(bad_refs)} not a symbol of the quote asset "
                            f"exchange.quote={quote} (references are streamed like traded symbols)")  # fmt: skip
        if self.train.embargo_bars < self.labels.horizon_bars:
            problems.append(f"train.embargo_bars: {self.train.embargo_bars} is shorter than labels.horizon_bars "
                            f"({self.labels.horizon_bars}): the last training labels would see into the validation block")  # fmt: skip
        t = self.train
        if t.folds > 0 and t.history_days - t.folds * t.fold_days < t.regime_fit_days:
            problems.append(f"train.history_days: {t.history_days} days leave {t.history_days - t.folds * t.fold_days:g} "
                            f"for the first fold's training after {t.folds} x train.fold_days ({t.fold_days:g}); it "
                            f"needs at least train.regime_fit_days ({t.regime_fit_days:g})")  # fmt: skip
        w = self.training.effective_window_days
        if self.training.window_days > self.training.max_window_days:
            problems.append(f"training.window_days: {self.training.window_days} is above training.max_window_days "
                            f"({self.training.max_window_days})")  # fmt: skip
        elif t.folds > 0 and w - t.folds * t.fold_days < t.regime_fit_days:
            problems.append(f"{self.training.window_key}: {w} days leave {w - t.folds * t.fold_days:g} for the first "
                            f"fold's training after {t.folds} x train.fold_days ({t.fold_days:g}); it needs at least "
                            f"train.regime_fit_days ({t.regime_fit_days:g})")  # fmt: skip
        problems += self._trading_possible() + self._exchange_consistent()
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _trading_possible(self) -> list[str]:
        """Values each valid alone that together leave no entry possible (the daemon would run,
        decide and record, and never trade)."""
        problems: list[str] = []
        states = self.trading.entry_regime_states
        n_states = self.features.regime_states
        if states is not None and (not states or any(not 0 <= s < n_states for s in states)):
            problems.append(f"trading.entry_regime_states: {states} names no state of the regime model (features."
                            f"regime_states={n_states}: 0..{n_states - 1}); entries would never be allowed, "
                            "null = any state")  # fmt: skip
        if self.mode == "paper":
            r, eq = self.risk, self.paper.initial_equity
            if self.trading.sizing == "equal_slots":
                largest, how = eq / len(self.symbols), f"/ {len(self.symbols)} symbols"
            else:
                cap = min(r.max_per_symbol, r.max_fraction_per_trade, r.max_gross_exposure)
                largest, how = eq * cap, f"x {cap:g} (risk.max_per_symbol / max_fraction_per_trade)"
            if largest < self.trading.paper_min_notional:
                problems.append(f"paper.initial_equity: {eq:g} {how} allows orders of at most {largest:.4g}, under "
                                f"trading.paper_min_notional ({self.trading.paper_min_notional:g}): no order could be "
                                "placed")  # fmt: skip
        r = self.risk
        on = [name for name, active in (("stop_loss_guard", r.stop_loss_guard.stop_losses > 0),
                                        ("low_profit_lock", r.low_profit_lock.max_loss > 0),
                                        ("drawdown_lookback", r.drawdown_lookback.max_drawdown > 0)) if active]  # fmt: skip
        if on and self.trading.sizing == "equal_slots":
            problems.append(f"trading.sizing: equal_slots sizes without the risk manager, so risk.{on[0]} (and every "
                            "other risk limit) would never act; use sizing: risk, or turn the protection off")  # fmt: skip
        if self.mode == "live" and self.live.max_entry_lag_s <= self.feed.minute_timeout_s:
            problems.append(f"live.max_entry_lag_s: {self.live.max_entry_lag_s:g} s is not longer than feed."
                            f"minute_timeout_s ({self.feed.minute_timeout_s:g} s): a minute released by that timeout "
                            "would always be too late for an entry")  # fmt: skip
        return problems

    def _exchange_consistent(self) -> list[str]:
        """The endpoints of one exchange, and a request pace that keeps up with the symbols."""
        problems: list[str] = []
        u = self.exchange.urls
        if (u.public is None) != (u.ws is None):
            given, missing = ("public", "ws") if u.ws is None else ("ws", "public")
            problems.append(f"exchange.urls.{missing}: not set while exchange.urls.{given} is: candles would come "
                            "from two exchanges (the unset one is Binance itself); set both or neither")  # fmt: skip
        if self.mode == "live" and u.public is not None:
            missing = [k for k in ("private", "ws_api") if getattr(u, k) is None and (k != "ws_api" or self.live.watch_orders)]
            if missing:
                problems.append(f"exchange.urls.{missing[0]}: not set while exchange.urls.public is: live orders "
                                "(and their fills) would go to Binance itself, the candles come from elsewhere")  # fmt: skip
        rl = self.exchange.rate_limit_ms
        n = len(dict.fromkeys([*self.symbols, *self.features.reference_symbols]))
        if rl and rl * n > 60_000:
            problems.append(f"exchange.rate_limit_ms: {rl} ms between requests allows {60_000 // rl} a minute; the "
                            f"REST fallback needs one per symbol ({n}, references included) each minute")  # fmt: skip
        return problems

    def masked(self) -> dict[str, Any]:
        """The effective config as plain data with every secret masked (safe to print or log)."""
        data = self.model_dump(mode="json")
        data["database"]["dsn"] = mask_dsn(self.database.dsn.get_secret_value())
        data["secrets"] = {
            "api_key": _mask(self.secrets.api_key),
            "api_secret": _mask(self.secrets.api_secret),
            "telegram_token": _mask(self.secrets.telegram_token),
            "telegram_chat_id": _mask(self.secrets.telegram_chat_id),
        }
        return data


def _mask(v: SecretStr | None) -> str | None:
    return None if v is None or not v.get_secret_value() else "********"


def mask_dsn(dsn: str) -> str:
    """Hide the password in a DSN: postgresql://user:pw@host/db -> postgresql://user:***@host/db."""
    if not dsn:
        return ""
    if "@" in dsn and "://" in dsn:
        scheme, rest = dsn.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        user = cred.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in cred else dsn
    if "password=" in dsn:
        return " ".join("password=***" if p.startswith("password=") else p for p in dsn.split())
    return dsn


# --- error formatting -------------------------------------------------------------------

_TYPE_WORDS = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
    "bool_parsing": "true or false", "string_type": "a string", "dict_type": "a mapping",
    "model_type": "a mapping", "tuple_type": "a list", "list_type": "a list",
}  # fmt: skip


def _loc(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        elif p in ("function-after", "function-before", "function-plain") or "[" in str(p):
            continue
        else:
            parts.append(("." if parts else "") + str(p))
    return "".join(parts) or "(top level)"


def _reason(err: dict[str, Any]) -> str:
    t, ctx, got = err["type"], err.get("ctx") or {}, err.get("input")
    if t == "missing":
        return "required key is missing"
    if t == "extra_forbidden":
        return "unknown key"
    if t in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[t]
        bound = next(iter(ctx.values()))
        bound = f"{bound:g}" if isinstance(bound, float) else bound
        return f"must be {op} {bound}, got {got!r}"
    if t in _TYPE_WORDS:
        return f"must be {_TYPE_WORDS[t]}, got {got!r}"
    if t == "literal_error":
        return f"must be one of {ctx.get('expected')}, got {got!r}"
    if t == "too_short":
        return f"must have at least {ctx.get('min_length')} item(s), got {ctx.get('actual_length')}"
    if t == "too_long":
        return f"must have at most {ctx.get('max_length')} item(s), got {ctx.get('actual_length')}"
    if t == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')}, got {got!r}"
    if t == "value_error":
        return str(ctx.get("error", err["msg"]))
    return f"{err['msg']}, got {got!r}"


def format_validation_error(exc: ValidationError) -> list[str]:
    out = []
    for e in exc.errors(include_url=False):
        loc, reason = _loc(e["loc"]), _reason(e)
        # Cross-field checks raised at model level name their key themselves ("symbols: ..."),
        # one line per contradiction.
        if loc == "(top level)" and ": " in reason:
            out.extend(reason.splitlines())
        else:
            out.append(f"{loc}: {reason}")
    return out


# --- loading ----------------------------------------------------------------------------

_SECRET_KEYS = {"api_key", "api_secret", "apikey", "secret", "password", "token", "telegram_token", "bot_token"}


def _find_inline_secrets(data: Any, path: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(data, dict):
        for k, v in data.items():
            p = f"{path}.{k}" if path else str(k)
            if str(k).lower() in _SECRET_KEYS:
                found.append(
                    f"{p}: secrets are not read from the config file; set {ENV_API_KEY}/"
                    f"{ENV_API_SECRET} or exchange.secrets_file (mode 0600)"
                )
            else:
                found.extend(_find_inline_secrets(v, p))
    return found


def _find_non_finite(data: Any, path: str = "") -> list[str]:
    """YAML's .nan/.inf parse as floats that pass every bound check (nan > 0 is not an error
    to pydantic's lax floats everywhere): refuse them by key path before validation."""
    found: list[str] = []
    if isinstance(data, dict):
        for k, v in data.items():
            found.extend(_find_non_finite(v, f"{path}.{k}" if path else str(k)))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            found.extend(_find_non_finite(v, f"{path}[{i}]"))
    elif isinstance(data, float) and not math.isfinite(data):
        found.append(f"{path}: must be a finite number, got {data!r}")
    return found


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last one
    silently, so a second `risk:` section would quietly replace the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            try:
                first = seen.get(key)
            except TypeError:
                first = None  # unhashable key: construct_mapping below says so
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (first at line {first.line + 1})", key_node.start_mark
                )
            with contextlib.suppress(TypeError):
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def check_paths(cfg: Config) -> list[str]:
    """Every directory the daemon writes (`paths.*`) must be a directory this process can write,
    or creatable as one, with room on its disk: found now by trying (`directory_problem`), not
    after the database started. Nothing is left behind."""
    problems: list[str] = []
    for key in ("data_dir", "models_dir", "logs_dir"):
        need = MIN_FREE_MB[key]
        if key == "data_dir" and cfg.database.dsn.get_secret_value():
            need = MIN_FREE_MB["models_dir"]  # an external database: no cluster in data_dir
        problem = directory_problem(Path(getattr(cfg.paths, key)).absolute(), need)
        if problem:
            problems.append(f"paths.{key}: {problem}")
    return problems


def check_machine(cfg: Config) -> list[str]:
    """What this machine must allow for the config to work: the directories, the dashboard's
    address, the external daily file."""
    problems = check_paths(cfg)
    d = cfg.dashboard
    if d.enabled:
        problem = listen_problem(d.host, d.port)
        if problem:
            problems.append(f"dashboard.port: {problem} (or dashboard.enabled: false)")
    ext = cfg.features.external_daily_file
    if ext is not None:
        p = Path(ext).expanduser()
        try:
            with p.open() as f:
                header = [c.strip() for c in f.readline().strip().split(",")]
        except OSError as e:
            problems.append(f"features.external_daily_file: {p} cannot be read ({e.strerror}); fix it or set it to null")
        else:
            missing = [c for c in ("date", *cfg.features.external_columns) if c not in header]
            if missing:
                problems.append(f"features.external_daily_file: {p} has no column(s) {', '.join(missing)} "
                                f"(features.external_columns); its header is {header[:8]}")  # fmt: skip
    return problems


def check_secrets(cfg: Config, secrets: Secrets) -> list[str]:
    """Secrets the config needs, in a form the service accepts; never shows one."""
    if cfg.mode == "live" and not secrets.complete:
        return [f"mode: live needs API keys ({ENV_API_KEY} and {ENV_API_SECRET}, or exchange.secrets_file); none found"]
    problems: list[str] = []
    if cfg.telegram.enabled:
        token, chat = secrets.telegram_token, secrets.telegram_chat_id
        if not (token and token.get_secret_value() and chat and chat.get_secret_value()):
            return [f"telegram.enabled: true needs {ENV_TELEGRAM_TOKEN} and {ENV_TELEGRAM_CHAT_ID} (or telegram_token "
                    "and telegram_chat_id in exchange.secrets_file); not both found"]  # fmt: skip
        problem = telegram_token_problem(token.get_secret_value())
        if problem:
            problems.append(f"secrets.telegram_token: {problem}")
        problem = telegram_chat_problem(chat.get_secret_value(), cfg.telegram.commands)
        if problem:
            problems.append(f"secrets.telegram_chat_id: {problem}")
    return problems


def read_secrets_file(path: Path) -> Secrets:
    """Read `api_key`/`api_secret` from a YAML file that only its owner can read."""
    try:
        st = path.stat()
    except FileNotFoundError as e:
        raise ConfigError([f"exchange.secrets_file: {path} does not exist"]) from e
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError([f"exchange.secrets_file: {path} is not a file"])
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            [f"exchange.secrets_file: {path} is mode {stat.S_IMODE(st.st_mode):04o}; must be 0600 (chmod 600)"]
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise ConfigError([f"exchange.secrets_file: {path} cannot be read ({e.strerror})"]) from None
    except yaml.YAMLError as e:
        raise ConfigError([f"exchange.secrets_file: {path} is not valid YAML ({type(e).__name__})"]) from None
    keys = {"api_key", "api_secret", "telegram_token", "telegram_chat_id"}
    if not isinstance(data, dict) or set(data) - keys:
        raise ConfigError([f"exchange.secrets_file: must be a mapping with only {', '.join(sorted(keys))}"])
    return Secrets(**{k: SecretStr(str(data[k])) for k in keys if data.get(k)})


def resolve_config_path(path: str | os.PathLike[str] | None) -> Path | None:
    """`--config` wins, then `$BOT_CONFIG`, then ./config.yaml; None if the default is absent."""
    if path is not None:
        return Path(path)
    if os.environ.get(ENV_CONFIG):
        return Path(os.environ[ENV_CONFIG])
    p = Path(DEFAULT_CONFIG_PATH)
    return p if p.exists() else None


def load_config(path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None) -> Config:
    """Load and validate the config; raise `ConfigError` listing every problem found.

    With no file at all (no --config, no $BOT_CONFIG, no ./config.yaml) the embedded defaults
    are used: paper mode, embedded database.
    """
    env = dict(os.environ) if env is None else env
    cfg_path = resolve_config_path(path)
    source = str(cfg_path) if cfg_path else "(embedded defaults)"
    data: Any = {}
    if cfg_path is not None:
        try:
            text = cfg_path.read_text()
        except FileNotFoundError:
            raise ConfigError([f"config file {cfg_path} does not exist"], source) from None
        except OSError as e:
            raise ConfigError([f"config file {cfg_path} cannot be read: {e.strerror}"], source) from None
        try:
            data = yaml.load(text, Loader=_UniqueKeyLoader)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError([f"(file): not valid YAML{where}: {getattr(e, 'problem', e)}"], source) from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError([f"(top level): must be a mapping of sections, got {type(data).__name__}"], source)

    non_finite = _find_non_finite(data)
    problems = _find_inline_secrets(data) + non_finite
    said = {line.split(": ", 1)[0] for line in problems}  # said once, not again as "unknown key"
    if env.get(ENV_DSN):
        data.setdefault("database", {})
        if isinstance(data["database"], dict):
            data["database"]["dsn"] = env[ENV_DSN]
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        problems.extend(line for line in format_validation_error(e) if line.split(": ", 1)[0] not in said)
        raise ConfigError(problems, source) from None
    if problems:
        raise ConfigError(problems, source)

    secrets = Secrets()
    if cfg.exchange.secrets_file is not None:
        try:
            secrets = read_secrets_file(cfg.exchange.secrets_file)
        except ConfigError as e:
            raise ConfigError(e.problems, source) from None
    if env.get(ENV_API_KEY):
        secrets = secrets.model_copy(update={"api_key": SecretStr(env[ENV_API_KEY])})
    if env.get(ENV_API_SECRET):
        secrets = secrets.model_copy(update={"api_secret": SecretStr(env[ENV_API_SECRET])})
    if env.get(ENV_TELEGRAM_TOKEN):
        secrets = secrets.model_copy(update={"telegram_token": SecretStr(env[ENV_TELEGRAM_TOKEN])})
    if env.get(ENV_TELEGRAM_CHAT_ID):
        secrets = secrets.model_copy(update={"telegram_chat_id": SecretStr(env[ENV_TELEGRAM_CHAT_ID])})
    problems = check_secrets(cfg, secrets) or check_machine(cfg)
    if problems:
        raise ConfigError(problems, source)
    return cfg.model_copy(update={"secrets": secrets})


# --- the commented default config file ----------------------------------------------------


def render_default_yaml() -> str:
    """The complete default config as commented YAML (what `config.yaml` holds).

    Generated from the schema so the file can never drift from it: values are the defaults,
    comments are each field's description and each section's docstring.
    """
    lines = [
        "# cryptobot configuration. Every key is shown with its default value; delete what you do",
        "# not change. Generated by `bot config template` from the schema in bot/config.py.",
        "# Secrets are NOT read from this file: set BOT_API_KEY / BOT_API_SECRET in the environment",
        "# or point exchange.secrets_file at a YAML file with mode 0600.",
        "",
    ]
    _render_model(Config, Config(), lines, indent=0)
    return "\n".join(lines) + "\n"


def _yaml_scalar(v: Any) -> str:
    """One value as flow-style YAML on one line (models, tuples and paths as plain data)."""
    if isinstance(v, SecretStr):
        v = v.get_secret_value()
    v = to_jsonable_python(v)
    text = yaml.safe_dump(v, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text[:-4].rstrip() if text.endswith("\n...") else text.removesuffix("...").strip()


def _render_model(model_cls: type[BaseModel], value: BaseModel, lines: list[str], indent: int) -> None:
    pad = "  " * indent
    for name, field in model_cls.model_fields.items():
        if field.exclude:
            continue
        v = getattr(value, name)
        desc = f"  # {field.description}" if field.description else ""
        if isinstance(v, BaseModel):
            doc = (type(v).__doc__ or "").strip().splitlines()
            if indent == 0:
                lines.append("")
            if doc and doc[0]:
                lines.append(f"{pad}# {doc[0]}")
            lines.append(f"{pad}{name}:{desc}")
            _render_model(type(v), v, lines, indent + 1)
        elif isinstance(v, tuple | list) and v and all(isinstance(x, BaseModel) for x in v):
            lines.append(f"{pad}{name}:{desc}")
            lines.extend(f"{pad}  - {_yaml_scalar(x)}" for x in v)
        elif name == "symbols":
            lines.append(f"{pad}# The 30 most liquid Binance USDT spot pairs at the time of writing; review before trading live.")
            lines.append(f"{pad}{name}:")
            lines.extend(f"{pad}  - {s}" for s in v)
        else:
            lines.append(f"{pad}{name}: {_yaml_scalar(v)}{desc}")
