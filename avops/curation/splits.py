"""Train/val/test splits disjoint by drive (ISO/PAS 8800: independent datasets).

Frames of one drive are strongly correlated; a drive in two splits leaks test
information into training. Assignment hashes the drive id, so a drive keeps its split
when the set grows, and test/val each get at least one drive when there are three.
"""

from __future__ import annotations

import hashlib

import pandas as pd


def _unit(drive_id: str) -> float:
    return int(hashlib.sha256(drive_id.encode()).hexdigest()[:12], 16) / float(16**12)


def assign_splits(drive_ids: list[str], fractions: dict[str, float]) -> dict[str, str]:
    """Map each drive to train/val/test by a stable hash; never leaves val/test empty if avoidable."""
    drives = sorted(set(drive_ids))
    t_train = fractions.get("train", 0.7)
    t_val = t_train + fractions.get("val", 0.15)
    out = {}
    for d in drives:
        u = _unit(d)
        out[d] = "train" if u < t_train else ("val" if u < t_val else "test")
    if len(drives) >= 3:
        for split in ("test", "val"):
            if split not in out.values():
                donors = sorted((d for d in drives if out[d] == "train"), key=_unit, reverse=True)
                if donors:
                    out[donors[0]] = split
    return out


def shared_drives(samples: pd.DataFrame) -> dict[str, list[str]]:
    """Drives that appear in more than one split (must be empty)."""
    per = samples.groupby("drive_id")["split"].agg(lambda s: sorted(set(s)))
    return {d: s for d, s in per.items() if len(s) > 1}
