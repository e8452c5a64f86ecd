"""Research runner: a grid of trainer configurations judged by nested walk-forward.

- `grid`: the grid spec (YAML) -> training variants x entry-rule variants;
- `nested`: the inner folds (inside the first weeks) and the outer block (the last weeks);
- `scores`: a fold's out-of-sample predictions per row, cached on disk;
- `entry`: the entry-rule levers applied to cached scores (cadence, cost multiple, cross-section rank, meta, regime);
- `diagnostics`: rank IC with day-block t-statistics, score deciles;
- `deflated`: the deflated Sharpe ratio (Bailey & Lopez de Prado);
- `runner`: one training variant end to end, the Optuna study, the choice and the outer block;
- `table`: the markdown / JSON report.
"""
