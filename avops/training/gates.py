"""The safety gate policy (``config/safety_gates.yaml``) evaluated against slice metrics.

Every verdict carries its evidence (slice, metric, lower bound, threshold, samples,
regression against production) so a failed gate explains itself in the UI and in the
compliance dossier.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import yaml

from avops.fleet_registry import project_root
from avops.training.slices import SliceSpec

ENV_GATES = "AVOPS_SAFETY_GATES"


@dataclass(frozen=True)
class Gate:
    slice: SliceSpec
    metric: str  # recall | precision
    min_lower_bound: float
    min_samples: int
    max_regression: float
    on_insufficient: str = "block"  # block | warn: too few samples of the slice in the test split


@dataclass(frozen=True)
class GatePolicy:
    bound: str
    confidence: float
    gates: tuple[Gate, ...]
    path: str
    iou: float = 0.5  # overlap a detection needs with a ground-truth box of its class to count
    engine_max_drop: float = 0.03  # largest drop of a gate's metric from the FP32 checkpoint to a compiled engine

    @property
    def slices(self) -> list[SliceSpec]:
        return [g.slice for g in self.gates]


def load_gate_policy(path: str | Path | None = None) -> GatePolicy:
    p = Path(path or os.environ.get(ENV_GATES) or project_root() / "config" / "safety_gates.yaml")
    raw = yaml.safe_load(p.read_text())
    gates = []
    for name, g in raw["gates"].items():
        if g.get("metric", "recall") not in ("recall", "precision"):
            raise ValueError(f"{p}: gate {name!r} has metric {g.get('metric')!r}; use recall or precision")
        missing = [k for k in ("min_lower_bound", "min_samples") if k not in g]
        if missing:
            raise ValueError(f"{p}: gate {name!r} lacks {missing}")
        if g.get("on_insufficient", "block") not in ("block", "warn"):
            raise ValueError(f"{p}: gate {name!r} has on_insufficient {g.get('on_insufficient')!r}; use block or warn")
        gates.append(Gate(SliceSpec(name, dict(g.get("where") or {}), tuple(g.get("classes") or ())), g.get("metric", "recall"),
                          float(g["min_lower_bound"]), int(g["min_samples"]), float(g.get("max_regression", 1.0)),
                          g.get("on_insufficient", "block")))
    return GatePolicy(raw.get("bound", "wilson"), float(raw.get("confidence", 0.95)), tuple(gates), str(p), float(raw.get("iou", 0.5)),
                      float(raw.get("engine_max_drop", 0.03)))


@dataclass(frozen=True)
class GateResult:
    gate: str
    metric: str
    value: float
    lower_bound: float
    threshold: float
    samples: int
    min_samples: int
    production_value: float | None
    regression: float | None
    max_regression: float
    passed: bool
    reason: str
    status: str = "pass"  # pass | fail | insufficient_evidence
    blocks: bool = False  # whether this verdict stops promotion
    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def evaluate_gates(policy: GatePolicy, candidate: pd.DataFrame, production: pd.DataFrame | None = None) -> list[GateResult]:
    """Judge every gate on the candidate's slice metrics (and against production's, when there is one)."""
    cand = candidate.set_index("slice")
    prod = production.set_index("slice") if production is not None else None
    out = []
    for g in policy.gates:
        name = g.slice.name
        if name not in cand.index:
            out.append(GateResult(name, g.metric, float("nan"), 0.0, g.min_lower_bound, 0, g.min_samples, None, None,
                                  g.max_regression, False, "slice missing from the evaluation", "fail", True))
            continue
        row = cand.loc[name]
        samples = int(row["objects"] if g.metric == "recall" else row["predictions"])
        value, lower = float(row[g.metric]), float(row[f"{g.metric}_lower"])
        prod_value = float(prod.loc[name, g.metric]) if prod is not None and name in prod.index else None
        regression = None if prod_value is None or math.isnan(prod_value) or math.isnan(value) else prod_value - value
        reasons = []
        if samples < g.min_samples:
            status = "insufficient_evidence"
            reasons.append(f"only {samples} samples, {g.min_samples} required")
        else:
            if lower < g.min_lower_bound:
                reasons.append(f"{g.metric} lower bound {lower:.3f} < {g.min_lower_bound:.3f}")
            if regression is not None and regression > g.max_regression:
                reasons.append(f"{g.metric} regressed by {regression:.3f} (> {g.max_regression:.3f}) against production {prod_value:.3f}")
            status = "fail" if reasons else "pass"
        blocks = status == "fail" or (status == "insufficient_evidence" and g.on_insufficient == "block")
        out.append(GateResult(name, g.metric, value, lower, g.min_lower_bound, samples, g.min_samples, prod_value, regression,
                              g.max_regression, status == "pass", "; ".join(reasons) or "holds", status, blocks))
    return out
