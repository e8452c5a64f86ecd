"""`bot features dump`: write the feature matrix of some symbols to CSV, computed by either path.

    bot features dump --candles ../shared/data/candles_1m --symbols SOLUSDT,ADAUSDT \
        --from 2021-04-24 --to 2021-04-25 --mode online --out feats.csv

Reads `SYMBOL.csv.gz` files (the reference symbols are read too), warms up from the
`warmup_bars` minutes before --from, and writes `symbol,ts,<feature names>` for every real bar in
[--from, --to). `--mode batch` and `--mode online` must give the same numbers; comparing the two
files is the outside view of the parity test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from models.timeutil import parse_time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("features", help="inspect the feature engine")
    fsub = p.add_subparsers(dest="features_command", metavar="ACTION", required=True)
    d = fsub.add_parser(
        "dump",
        help="write the feature matrix (batch or online path) of candle files to CSV",
        description="Features of every real bar in [--from, --to) of the given symbols, warmed up "
        "from the candles before --from. Warm-up: a row is fully defined only after "
        "features.warmup_bars minutes of 1m history (7,920 = 5.5 days with the default config) of "
        "the symbol and of the reference symbols; rows closer than that to the start of the data "
        "have empty (NaN) columns. The regime columns stay empty unless --regime or --fit-regime "
        "is given.",
    )
    d.add_argument("--candles", required=True, metavar="DIR", help="directory of SYMBOL.csv.gz files")
    d.add_argument("--symbols", required=True, metavar="A,B", help="comma-separated symbols to write")
    d.add_argument("--from", dest="start", required=True, metavar="T0", help="UTC date/time (ISO) or epoch ms; the files need ~5.5 days of candles before it for fully defined rows")
    d.add_argument("--to", dest="end", required=True, metavar="T1", help="exclusive end, UTC date/time or epoch ms")
    d.add_argument("--mode", choices=("batch", "online"), default="batch")
    d.add_argument("--out", required=True, metavar="FILE.csv")
    g = d.add_mutually_exclusive_group()
    g.add_argument("--regime", metavar="FILE.json", help="regime model (RegimeModel.to_dict JSON); without it or --fit-regime the regime columns are empty")
    g.add_argument(
        "--fit-regime", action="store_true",
        help="fit the regime HMM on the candles before --from (else the regime columns stay empty)",
    )
    d.add_argument("--external", metavar="FILE.csv", help="external daily series (default: features.external_daily_file)")
    d.set_defaults(func=_dump)


def _dump(args: argparse.Namespace) -> int:
    from bot.cli.commands import load_config_or_exit

    cfg = load_config_or_exit(args).features
    try:
        start, end = parse_time(args.start), parse_time(args.end)
    except ValueError as e:
        print(f"features dump: {e}", file=sys.stderr)
        return 2
    if end <= start:
        print("features dump: --to must be after --from", file=sys.stderr)
        return 2
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
    if not symbols:
        print("features dump: --symbols is empty", file=sys.stderr)
        return 2
    try:
        return _run(args, cfg, symbols, start, end)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"features dump: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, cfg, symbols: list[str], start: int, end: int) -> int:  # noqa: ANN001
    import numpy as np
    import pandas as pd

    from models.candles import candle_files, read_candles_csv
    from models.features.batch import compute_batch, fit_regime
    from models.features.external import external_from_config, load_external_daily
    from models.features.online import OnlineFeatureEngine
    from models.features.regime import RegimeModel
    from models.features.spec import feature_names, warmup_bars
    from models.timeutil import MINUTE_MS

    t_start = time.perf_counter()
    refs = list(cfg.reference_symbols)
    engine_syms = symbols + [r for r in refs if r not in symbols]
    files = candle_files(args.candles, engine_syms)
    w = warmup_bars(cfg)
    lo = start - w * MINUTE_MS
    full = {s: read_candles_csv(files[s]) for s in engine_syms}
    data = {s: c.between(lo, end) for s, c in full.items()}

    regime = None
    if args.regime:
        regime = RegimeModel.from_dict(json.loads(Path(args.regime).read_text()))
    elif args.fit_regime:
        regime = fit_regime(full[refs[0]].between(None, start), cfg)
    if args.external:
        external = load_external_daily(args.external, cfg.external_columns, cfg.external_max_age_days)
    else:
        external = external_from_config(cfg)
    names = feature_names(cfg, external=external is not None)

    parts: list[pd.DataFrame] = []
    if args.mode == "batch":
        ref_data = {r: data[r] for r in refs}
        for s in symbols:
            c = data[s]
            x = compute_batch(c, ref_data, cfg, regime=regime, external=external)
            keep = c.ts >= start
            parts.append(_frame(s, c.ts[keep], x[keep], names))
    else:
        # the backtest's own minute loop
        from bot.backtest.runner import minute_matrix, online_feature_rows

        eng = OnlineFeatureEngine(engine_syms, cfg, regime=regime, external=external)
        eng.warm_up({s: c.between(None, start) for s, c in data.items()})
        minutes, bars = minute_matrix(data, engine_syms, start, end)
        feats = online_feature_rows(eng, minutes, bars)
        for i, s in enumerate(symbols):
            real = ~np.isnan(bars[:, i, 3])
            parts.append(_frame(s, minutes[real], feats[real, i], names))

    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["symbol", "ts", *names])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False, float_format="%.9g")
    print(
        f"features dump: {len(df)} rows x {len(names)} features ({args.mode}) -> {out} "
        f"in {time.perf_counter() - t_start:.1f}s",
        file=sys.stderr,
    )
    return 0


def _frame(symbol: str, ts, x, names: list[str]):  # noqa: ANN001,ANN202
    import pandas as pd

    df = pd.DataFrame(x, columns=names)
    df.insert(0, "ts", ts)
    df.insert(0, "symbol", symbol)
    return df
