"""The research grid: which trainer settings to train, and which entry rules to judge them with.

A grid YAML has two product spaces:

    name: levers-v1
    train:                 # each combination is trained (one Optuna grid point)
      labels.horizon_bars: [60, 240]
      labels.base_k_tp: [1.5, 3.0]
      labels.target: [absolute, cross_sectional]
      universe: [default]            # optional; names of symbol lists given on the command line
    extra_train:           # optional: single extra variants beside the product (e.g. one on 86 symbols)
      - {labels.horizon_bars: 240, universe: all86}
    rule:                  # each combination is judged on the trained variant's cached scores
      cadence_minutes: [1, 15, 60]
      cost_multiple: [null, 1.0]
      top_k: [null, 3]
      use_meta: [true, false]
    extra_rule:            # optional: single extra rules beside the product (alone if `rule` is absent)
      - {cadence_minutes: 60, quantile: 0.9, floor: true}
    layout:                # optional: the nested walk-forward's shape (the command line overrides it)
      outer_days: 61
      inner_folds: 2
      fold_days: 61
    promote: true          # optional: promote the chosen bundle if its outer block clears the no-edge floor
    base:                  # fixed overrides of the config sections for every variant
      train.row_stride: 5
    selection:
      min_trades: 100      # a configuration with fewer inner trades cannot be chosen
      min_fold_trades: 30  # ... nor one with fewer in any single inner fold
      rank: stable         # stable (share of months with PF > 1 first) or best (the metric alone)

Training keys are dotted paths into the `features` / `labels` / `costs` / `train` sections; the
entry-rule keys are the fields of `models.research.entry.EntryRule`. Whatever universe a variant
is trained on, it is judged trading the `default` universe (training on 86 symbols, trading 30). A configuration is one
training variant with one entry rule; the number of configurations tried (for the
multiple-testing correction) is the size of the whole product.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.research.entry import EntryRule

SECTIONS = ("features", "labels", "costs", "train")


class GridError(ValueError):
    """A grid file that cannot be used; the message names the key and the reason."""


class Selection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_trades: int = Field(100, ge=1, description="fewest trades over the inner folds for a configuration to be chosen")
    min_fold_trades: int = Field(0, ge=0, description="fewest trades in *each* inner fold (a choice must trade in every period)")
    metric: str = Field("sharpe_trade", description="inner figure that chooses: sharpe_trade (mean/sd of trade returns) or expectancy")
    rank: Literal["stable", "best"] = Field(
        "stable",
        description="stable: the highest share of inner months with PF > 1, then the best worst month (its PF), then "
        "`metric`; best: `metric` alone (the rule of the first research run, docs/grids/levers.yaml)",
    )  # fmt: skip


class Layout(BaseModel):
    """The nested walk-forward's shape (the command line may override each)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    outer_days: float = Field(14.0, gt=0, description="the outer block: the data's last N days (unless --outer names one)")
    inner_folds: int = Field(2, ge=1, description="anchored inner walk-forward folds")
    fold_days: float | None = Field(None, gt=0, description="length of each inner validation block; None = the inner range shared equally")


class GridFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "grid"
    train: dict[str, list[Any]] = Field(default_factory=dict)
    extra_train: list[dict[str, Any]] = Field(default_factory=list)
    rule: dict[str, list[Any]] = Field(default_factory=dict)
    extra_rule: list[dict[str, Any]] = Field(default_factory=list)
    base: dict[str, Any] = Field(default_factory=dict)
    selection: Selection = Selection()
    layout: Layout = Layout()
    promote: bool = Field(False, description="write the chosen bundle and promote it if its outer block clears the no-edge floor")


@dataclass(frozen=True)
class TrainVariant:
    """One point of the training space: dotted overrides (plus the universe name)."""

    overrides: dict[str, Any]
    universe: str | None

    @property
    def key(self) -> str:
        return json.dumps({"o": self.overrides, "u": self.universe}, sort_keys=True)

    @property
    def id(self) -> str:
        return "t-" + hashlib.sha256(self.key.encode()).hexdigest()[:10]

    def label(self) -> str:
        short = {k.split(".")[-1]: v for k, v in self.overrides.items()}
        parts = [f"{k}={v}" for k, v in sorted(short.items())]
        if self.universe:
            parts.append(f"universe={self.universe}")
        return " ".join(parts) or "defaults"


@dataclass(frozen=True)
class Grid:
    name: str
    train: list[TrainVariant]
    rules: list[EntryRule]
    base: dict[str, Any]
    selection: Selection
    layout: Layout = Layout()
    promote: bool = False

    @property
    def n_configurations(self) -> int:
        return len(self.train) * len(self.rules)


def _product(space: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = sorted(space)
    for k in keys:
        if not isinstance(space[k], list) or not space[k]:
            raise GridError(f"grid key {k!r}: expected a non-empty list of values, got {space[k]!r}")
    return [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*(space[k] for k in keys))]


def _check_path(key: str, where: str) -> None:
    if key == "universe" and where in ("train", "extra_train"):
        return
    head = key.split(".", 1)[0]
    if head not in SECTIONS or "." not in key:
        raise GridError(f"{where} key {key!r}: expected <section>.<field> with section one of {', '.join(SECTIONS)}")


def parse_grid(data: dict[str, Any]) -> Grid:
    try:
        g = GridFile.model_validate(data)
    except ValidationError as e:
        raise GridError(f"bad grid: {e}") from None
    for k in g.train:
        _check_path(k, "train")
    for k in g.base:
        _check_path(k, "base")
    train = []
    for combo in _product(g.train) if g.train else [{}]:
        uni = combo.pop("universe", None)
        train.append(TrainVariant(combo, None if uni in (None, "default") else str(uni)))
    for extra in g.extra_train:
        combo = dict(extra)
        for k in combo:
            _check_path(k, "extra_train")
        uni = combo.pop("universe", None)
        v = TrainVariant(combo, None if uni in (None, "default") else str(uni))
        if v.id not in {t.id for t in train}:
            train.append(v)
    rules: list[EntryRule] = []
    for combo in [*(_product(g.rule) if g.rule else ([] if g.extra_rule else [{}])), *g.extra_rule]:
        try:
            r = EntryRule.model_validate(combo)
        except ValidationError as e:
            raise GridError(f"bad entry rule {combo}: {e}") from None
        if r not in rules:
            rules.append(r)
    return Grid(g.name, train, rules, dict(g.base), g.selection, g.layout, g.promote)


def load_grid(path: str | Path) -> Grid:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise GridError(f"cannot read grid {p}: {e}") from None
    if not isinstance(data, dict):
        raise GridError(f"grid {p}: expected a mapping at the top level")
    return parse_grid(data)


def apply_overrides(settings_dict: dict[str, Any], *overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of `Settings.to_dict()` with dotted overrides applied (validated later by pydantic)."""
    out = json.loads(json.dumps(settings_dict))
    for ov in overrides:
        for key, val in ov.items():
            parts = key.split(".")
            node = out
            for p in parts[:-1]:
                if p not in node or not isinstance(node[p], dict):
                    raise GridError(f"grid key {key!r}: no section {p!r}")
                node = node[p]
            if parts[-1] not in node:
                raise GridError(f"grid key {key!r}: unknown field {parts[-1]!r}")
            node[parts[-1]] = val
    return out
