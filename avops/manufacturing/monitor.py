"""What the line sensors look at: the configuration a line reports, and the rework station's verdicts."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from avops.home import HomeLayout
from avops.manufacturing.data import read_verdicts


def newest_shift(home: HomeLayout, line: str) -> dict | None:
    """The newest complete shift's manifest (``shift.json`` is written last), or None."""
    root = home.plant / "aoi" / line
    for folder in sorted((p for p in root.iterdir() if p.is_dir()), reverse=True) if root.exists() else []:
        manifest = folder / "shift.json"
        if manifest.exists():
            try:
                return json.loads(manifest.read_text())
            except json.JSONDecodeError:
                continue  # quarantined when the data asset reads it
    return None


def shift_inspectors(home: HomeLayout, line: str) -> dict[str, int | None]:
    """shift id -> the model version the AOI station ran in that shift."""
    out = {}
    for manifest in (home.plant / "aoi" / line).glob("*/shift.json"):
        try:
            m = json.loads(manifest.read_text())
            out[m["shift_id"]] = m.get("inspector_version")
        except (json.JSONDecodeError, KeyError):
            continue
    return out


@dataclass
class FalseAlarms:
    rate: float
    flagged: int
    overturned: int
    window: int
    version: int


def false_alarm_rate(home: HomeLayout, line: str, version: int, window: int) -> FalseAlarms:
    """Of the last ``window`` parts that ``version`` flagged and rework has judged, the share it overturned."""
    verdicts, _ = read_verdicts(home, line, known=None)
    if verdicts.empty:
        return FalseAlarms(float("nan"), 0, 0, window, version)
    inspectors = shift_inspectors(home, line)
    shift_of = verdicts["part_id"].str.rsplit("-p", n=1).str[0]
    mine = verdicts[(verdicts["label_source"] == "rework") & (shift_of.map(inspectors) == version)]
    last = mine.sort_values("label_recorded_at").tail(window)
    n, over = len(last), int((last["outcome"] == "overturned").sum())
    return FalseAlarms(over / n if n else float("nan"), n, over, window, version)


def verdict_files_digest(home: HomeLayout, line: str) -> str:
    """Cheap change detection for the FP-rate sensor: names, sizes and mtimes of the rework exports."""
    files = sorted((home.plant / "rework" / line).glob("*.csv"))
    return hashlib.sha256("|".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files).encode()).hexdigest()[:16]
