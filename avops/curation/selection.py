"""Pick the informative frames under a labeling budget, and say why each was picked.

Order of work: drop near-duplicates (frames of the same drive within a second show
the same scene), fill the rare-slice quotas (night, fog, snow, roadworks, vulnerable
road users) with their most informative frames, add a small random share (an unbiased
sample keeps evaluation honest), then spend the rest of the budget on the most
uncertain frames and those the ensemble (or, later, the shadow-mode model) disagrees on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from avops.curation.policy import quota_mask


@dataclass(frozen=True)
class SelectionConfig:
    budget_frames: int
    review_budget_frames: int
    review_uncertainty: float
    random_share: float
    near_duplicate_seconds: float
    quotas: dict[str, float]

    @classmethod
    def from_policy(cls, selection: dict) -> SelectionConfig:
        return cls(
            budget_frames=int(selection["budget_frames"]),
            review_budget_frames=int(selection["review_budget_frames"]),
            review_uncertainty=float(selection["review_uncertainty"]),
            random_share=float(selection.get("random_share", 0.0)),
            near_duplicate_seconds=float(selection.get("near_duplicate_seconds", 1.0)),
            quotas={k: float(v) for k, v in selection.get("quotas", {}).items()},
        )


REQUIRED = ("drive_id", "frame_index", "timestamp", "uncertainty", "disagreement", "illumination", "weather", "roadworks", "has_vru")


def informativeness(df: pd.DataFrame) -> pd.Series:
    """Uncertainty and disagreement (ensemble, and shadow mode when present), plus a little for frames with detections."""
    shadow = df["shadow_disagreement"].fillna(0) if "shadow_disagreement" in df else 0.0
    return 0.6 * df["uncertainty"] + 0.4 * df["disagreement"] + 0.6 * shadow + 0.05 * (df.get("n_detections", 0) > 0)


def _dominant_signal(row: pd.Series) -> str:
    signals = {"uncertainty": row["uncertainty"], "disagreement": row["disagreement"]}
    if "shadow_disagreement" in row and pd.notna(row["shadow_disagreement"]):
        signals["shadow_disagreement"] = row["shadow_disagreement"]
    return max(signals, key=signals.get)


def select_frames(frames: pd.DataFrame, config: SelectionConfig, seed: int = 0) -> pd.DataFrame:
    """Return ``frames`` with columns ``selected`` (bool), ``reasons`` (';'-joined) and ``review`` (bool)."""
    missing = [c for c in REQUIRED if c not in frames]
    if missing:
        raise KeyError(f"selection needs columns {missing}")
    df = frames.copy()
    df["score"] = informativeness(df)
    df["reasons"] = [[] for _ in range(len(df))]
    df["selected"] = False

    # 1. near-duplicates: keep the most informative frame per drive and time window
    window = np.floor(df["timestamp"] / max(config.near_duplicate_seconds, 1e-9)).astype(np.int64)
    best = df.assign(_w=window).sort_values("score", ascending=False).groupby(["drive_id", "_w"]).head(1).index
    dup = ~df.index.isin(best)
    for i in df.index[dup]:
        df.at[i, "reasons"].append("near_duplicate")
    eligible = ~dup
    budget = min(config.budget_frames, int(eligible.sum()))

    def take(mask: pd.Series, n: int, reason: str, by_score: bool = True) -> None:
        pool = df[mask & eligible & ~df["selected"]]
        if n <= 0 or pool.empty:
            return
        if by_score:
            chosen = pool.sort_values(["score", "drive_id", "frame_index"], ascending=[False, True, True]).head(n).index
        else:
            chosen = pool.sample(n=min(n, len(pool)), random_state=seed).index
        df.loc[chosen, "selected"] = True
        for i in chosen:
            df.at[i, "reasons"].append(reason)

    # 2. quotas for rare slices
    for name, share in config.quotas.items():
        take(quota_mask(df, name), int(round(share * budget)), f"quota:{name}")
    # 3. unbiased random share
    take(pd.Series(True, index=df.index), int(round(config.random_share * budget)), "random", by_score=False)
    # 4. the rest by informativeness, labelled with the dominant signal
    remaining = budget - int(df["selected"].sum())
    if remaining > 0:
        pool = df[eligible & ~df["selected"]].sort_values(["score", "drive_id", "frame_index"], ascending=[False, True, True]).head(remaining)
        df.loc[pool.index, "selected"] = True
        for i in pool.index:
            df.at[i, "reasons"].append(_dominant_signal(df.loc[i]))

    # frames that also match a rare slice say so, even if picked for another reason
    for name in config.quotas:
        m = quota_mask(df, name) & df["selected"]
        for i in df.index[m]:
            if f"quota:{name}" not in df.at[i, "reasons"]:
                df.at[i, "reasons"].append(f"slice:{name}")

    # review: the most uncertain selected frames, within the review budget
    cand = df[df["selected"] & (df["uncertainty"] >= config.review_uncertainty)]
    review_idx = cand.sort_values("uncertainty", ascending=False).head(config.review_budget_frames).index
    df["review"] = df.index.isin(review_idx)
    df["reasons"] = df["reasons"].map(";".join)
    return df.drop(columns=["score"])
