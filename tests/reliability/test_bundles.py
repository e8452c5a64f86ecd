"""Corrupt, truncated and incompatible model bundles (issue 15): each is refused with a
`BundleError` whose message says what is wrong, and an engine that runs a bundle keeps it when
the next one is refused (`models.bundle.directory.load_bundle` + `Engine.swap_bundle`, the path a
hot-swap takes; the daemon's own hot-swap is issue 12's work)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from models.bundle.directory import CAT_FILE, LGB_FILES, MANIFEST, BundleError, _sha256, load_bundle
from tests.support.reliability_figures import record

pytestmark = pytest.mark.slow  # the session's small real bundle (trained once, then cached)


def copy_of(bundle: Any, tmp_path: Path) -> Path:
    dst = tmp_path / "b"
    shutil.copytree(bundle.path, dst)
    return dst


def edit_manifest(p: Path, fn: Callable[[dict], None]) -> None:
    m = json.loads((p / MANIFEST).read_text())
    fn(m)
    (p / MANIFEST).write_text(json.dumps(m))


def truncate(p: Path, name: str, rehash: bool) -> None:
    f = p / name
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 3])
    if rehash:  # the manifest was rewritten for the damaged file: the loader itself must refuse it
        edit_manifest(p, lambda m: m["files"].__setitem__(name, _sha256(f)))


def flip_byte(p: Path, name: str) -> None:
    f = p / name
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated_booster": (lambda p: truncate(p, LGB_FILES["er"], False), "lgb_er.txt does not match its recorded sha256"),
    "truncated_booster_rehashed": (lambda p: truncate(p, LGB_FILES["er"], True), "lgb_er.txt does not load"),
    "truncated_catboost_rehashed": (lambda p: truncate(p, CAT_FILE, True), "cat_er.cbm does not load"),
    "hash_mismatch": (lambda p: flip_byte(p, LGB_FILES["q05"]), "lgb_q05.txt does not match its recorded sha256"),
    "booster_missing": (lambda p: (p / LGB_FILES["e_mae"]).unlink(), "lgb_e_mae.txt is missing"),
    "manifest_missing": (lambda p: (p / MANIFEST).unlink(), "no manifest.json; not a bundle or an interrupted write"),
    "manifest_truncated": (lambda p: (p / MANIFEST).write_text((p / MANIFEST).read_text()[:200]), "corrupt manifest"),
    "manifest_lacks_feature_config": (lambda p: edit_manifest(p, lambda m: m.pop("feature_config")), "manifest lacks 'feature_config'"),
    "manifest_lacks_version": (lambda p: edit_manifest(p, lambda m: m.pop("version")), "manifest lacks 'version'"),
    "manifest_lacks_files": (lambda p: edit_manifest(p, lambda m: m.pop("files")), "manifest lacks 'files'"),
    "future_format": (lambda p: edit_manifest(p, lambda m: m.__setitem__("format_version", 99)),
                      "bundle format 99, this code reads format 1; retrain"),
    "feature_list_mismatch": (lambda p: edit_manifest(p, lambda m: m["feature_names"].append("made_up_feature")),
                              "the feature engine's columns differ from the bundle's"),
    "feature_config_from_elsewhere": (lambda p: edit_manifest(p, lambda m: m["feature_config"].__setitem__("no_such_knob", 1)),
                                      "stored feature config is not valid for this code"),
    "selected_not_in_list": (lambda p: edit_manifest(p, lambda m: m.__setitem__("selected_features", ["nope"])),
                             "selected features are empty or not part of the feature list"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_broken_bundle_is_refused_with_a_clear_reason(name: str, engine_bundle: Any, tmp_path: Path) -> None:
    p = copy_of(engine_bundle, tmp_path)
    damage, reason = CASES[name]
    damage(p)
    with pytest.raises(BundleError) as ei:
        load_bundle(p)
    assert reason in str(ei.value), str(ei.value)
    assert str(p) in str(ei.value)  # names the bundle


def test_an_intact_copy_loads(engine_bundle: Any, tmp_path: Path) -> None:
    """The damage above is what fails, not the copying."""
    assert load_bundle(copy_of(engine_bundle, tmp_path)).version == engine_bundle.version


def test_engine_keeps_its_bundle_when_the_next_one_is_refused(engine_bundle: Any, tmp_path: Path) -> None:
    from bot.engine import Engine
    from models.features.online import OnlineFeatureEngine
    from tests.support.engine import SYMBOLS

    eng = Engine(SYMBOLS, engine_bundle)
    before = (eng.model_version, eng.bundle, eng.features, eng.rule.describe(), eng.watch_reason, eng.horizon_ms)
    refused = 0
    for name in CASES:  # every broken bundle: refused at load, the engine untouched
        p = tmp_path / name
        shutil.copytree(engine_bundle.path, p)
        CASES[name][0](p)
        try:
            eng.swap_bundle(load_bundle(p))
        except BundleError:
            refused += 1
    # A bundle that loads but the engine cannot use (no label config): refused by the swap,
    # even with a new feature engine handed in, which must not be taken either.
    p = tmp_path / "no_labels"
    shutil.copytree(engine_bundle.path, p)
    edit_manifest(p, lambda m: m.pop("label_config"))
    odd = load_bundle(p)
    fresh = OnlineFeatureEngine(eng.symbols, engine_bundle.feature_config(), regime=engine_bundle.regime_model())
    with pytest.raises(BundleError, match="manifest lacks label_config"):
        eng.swap_bundle(odd, features=fresh)
    after = (eng.model_version, eng.bundle, eng.features, eng.rule.describe(), eng.watch_reason, eng.horizon_ms)
    assert after == before
    assert refused == len(CASES)
    record("bundles_refused", {"tried": len(CASES) + 1, "refused_clearly": refused + 1, "engine_kept_previous": True})
    # and a good one is still taken
    good = load_bundle(copy_of(engine_bundle, tmp_path))
    eng.swap_bundle(good)
    assert eng.bundle is good


async def test_the_daemon_hot_swap_refuses_each_broken_champion_and_keeps_trading_its_bundle(
    engine_bundle: Any, store: Any, tmp_path: Path
) -> None:
    """Through the daemon's own entry point (`bot.live.hotswap.ChampionFollower.check`, called by the
    live loop between minutes): each broken bundle promoted as champion is refused, said in
    the log with its reason, and the engine keeps the bundle it trades with."""
    import numpy as np
    import structlog.testing

    from bot.engine import Engine
    from bot.live.hotswap import ChampionFollower
    from bot.store.model_versions import promote, record_model_version
    from tests.support.engine import SYMBOLS

    eng = Engine(SYMBOLS, engine_bundle)

    class Trader:  # the LiveTrader attributes the follower reads
        def __init__(self) -> None:
            self.engine, self.store, self.model_version = eng, store, engine_bundle.version
            self.last_minute, self.metrics = int(engine_bundle.manifest["data_to_ts"]), None

        async def _in_worker(self, fn: Any, *args: Any) -> Any:
            return fn(*args)

    tr = Trader()
    follower = ChampionFollower(tr)
    bars = np.zeros((len(eng.symbols), 5))
    cases = {**CASES, "no_label_config": (lambda p: edit_manifest(p, lambda m: m.pop("label_config")), "manifest lacks label_config")}
    for k, (name, (damage, reason)) in enumerate(cases.items()):
        p = tmp_path / name
        shutil.copytree(engine_bundle.path, p)
        damage(p)
        version = f"broken-{name}"
        async with store.pool.acquire() as conn:
            await record_model_version(conn, version=version, path=str(p), created_ts=1_700_000_000_000 + k,
                                       data_from_ts=0, data_to_ts=1)  # fmt: skip
        await promote(store.pool, version, 1_700_000_000_100 + k)
        with structlog.testing.capture_logs() as logs:
            swapped = await follower.check(tr.last_minute, bars)
        assert swapped is False and tr.model_version == engine_bundle.version and eng.bundle is engine_bundle, name
        refused = [e for e in logs if e["event"] == "model_swap_refused"]
        assert len(refused) == 1 and reason in refused[0]["error"], (name, logs)
        assert f"still trading with {engine_bundle.version}" in refused[0]["text"]
        assert version in follower.refused
    record("hotswap_refused", {"tried": len(cases), "refused": len(follower.refused)})


async def test_a_broken_champion_at_start_is_said_and_does_not_crash_the_daemon(
    engine_bundle: Any, store: Any, tmp_path: Path
) -> None:
    """`LiveTrader._bundle` (the daemon's start-up load): a champion whose files are damaged is
    refused with its reason in one line and the daemon goes on collecting candles (it returns
    no bundle) instead of exiting, which under systemd would be a restart loop."""
    import structlog.testing

    from bot.live.trader import LiveTrader
    from bot.store.model_versions import promote, record_model_version

    p = tmp_path / "broken"
    shutil.copytree(engine_bundle.path, p)
    truncate(p, LGB_FILES["er"], rehash=True)
    async with store.pool.acquire() as conn:
        await record_model_version(conn, version="broken-start", path=str(p), created_ts=1_700_000_000_000,
                                   data_from_ts=0, data_to_ts=1)  # fmt: skip
    await promote(store.pool, "broken-start", 1_700_000_000_100)
    tr = LiveTrader.__new__(LiveTrader)  # only what `_bundle` reads before loading
    tr.store, tr.no_train = store, True

    async def in_worker(fn: Any, *args: Any) -> Any:
        return fn(*args)

    tr._in_worker = in_worker
    with structlog.testing.capture_logs() as logs:
        assert await tr._bundle() is None
    bad = [e for e in logs if e["event"] == "model_unusable"]
    assert len(bad) == 1 and bad[0]["version"] == "broken-start" and bad[0]["reason"]
    assert "collecting candles only" in bad[0]["text"]
