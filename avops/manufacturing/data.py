"""AOI shifts and rework/audit verdicts as one labelled table per line, images content-addressed.

A shift is read only once its ``shift.json`` exists (the line writes it last). A shift whose
manifest does not parse is moved to ``quarantine/plant/<line>/`` with the reason; a part whose
image is missing or does not match its recorded sha256 is set aside the same way; a rework row
that names an unknown part or outcome is quarantined; everything else is used.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa

from avops import datasets
from avops.home import HomeLayout
from avops.store import ObjectStore, atomic_write_json, sha256_bytes

DATA_KEY = "manufacturing/inspection_data"
PARTS_TABLE = "parts"
OUTCOME_LABEL = {"confirmed_defect": 1, "audit_defect": 1, "overturned": 0, "audit_ok": 0}


@dataclass
class InspectionData:
    parts: pd.DataFrame  # part_id, shift_id, time, image_sha256, config_digest, aoi_score, aoi_flag, label, label_source, label_recorded_at
    configs: dict[str, dict]  # config digest -> configuration
    shifts: list[dict]  # shift_id, start, config_digest, manifest sha256
    quarantined: list[dict] = field(default_factory=list)


def _quarantine(home: HomeLayout, line: str, what: str, reason: str, move: Path | None = None) -> dict:
    qdir = home.quarantine / "plant" / line
    record = {"what": what, "reason": reason}
    if move is not None and move.exists():
        target = qdir / move.name
        qdir.mkdir(parents=True, exist_ok=True)
        shutil.move(str(move), str(target))
        record["moved_to"] = str(target)
    atomic_write_json(qdir / f"{Path(what).name}.reason.json", record)
    return record


def read_line(home: HomeLayout, line: str, store: ObjectStore) -> InspectionData:
    """Every complete shift of ``line`` with its parts' images stored and their latest verdicts joined."""
    root = home.plant / "aoi" / line
    rows, configs, shifts, quarantined = [], {}, [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []:
        manifest = folder / "shift.json"
        if not manifest.exists():
            continue  # still being delivered
        raw = manifest.read_bytes()
        try:
            shift = json.loads(raw)
            parts, digest, config = shift["parts"], shift["config_digest"], shift["line_config"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            quarantined.append(_quarantine(home, line, str(manifest), f"shift.json unreadable ({e!r}); shift set aside", folder))
            continue
        configs[digest] = config
        shifts.append({"shift_id": shift["shift_id"], "start": shift["start"], "config_digest": digest, "manifest_sha256": sha256_bytes(raw)})
        for p in parts:
            image = folder / p["image"]
            data = image.read_bytes() if image.exists() else None
            if data is None or sha256_bytes(data) != p["sha256"]:
                why = "image missing" if data is None else "image does not match its recorded sha256"
                quarantined.append(_quarantine(home, line, str(image), f"part {p['part_id']}: {why}"))
                continue
            rows.append({"part_id": p["part_id"], "shift_id": shift["shift_id"], "time": p["time"], "image_sha256": store.put_bytes(data),
                         "config_digest": digest, "aoi_score": p.get("aoi_score"), "aoi_flag": p.get("aoi_flag")})
    parts = pd.DataFrame(rows, columns=["part_id", "shift_id", "time", "image_sha256", "config_digest", "aoi_score", "aoi_flag"])
    verdicts, bad = read_verdicts(home, line, set(parts["part_id"]))
    quarantined += bad
    parts = parts.merge(verdicts, on="part_id", how="left")
    return InspectionData(parts, configs, shifts, quarantined)


def read_verdicts(home: HomeLayout, line: str, known: set[str] | None) -> tuple[pd.DataFrame, list[dict]]:
    """Rework and audit verdicts per part (the latest recorded wins); ``known`` (if given) are the parts that exist."""
    frames, bad = [], []
    for f in sorted((home.plant / "rework" / line).glob("*.csv")):
        df = pd.read_csv(f, dtype=str, keep_default_na=False)
        missing = {"part_id", "outcome", "recorded_at", "station"} - set(df.columns)
        if missing:
            bad.append(_quarantine(home, line, str(f), f"columns {sorted(missing)} missing", f))
            continue
        ok = df["outcome"].isin(list(OUTCOME_LABEL)) & (df["part_id"].isin(known) if known is not None else True)
        for i in df.index[~ok]:
            why = f"unknown outcome {df.at[i, 'outcome']!r}" if df.at[i, "outcome"] not in OUTCOME_LABEL else f"unknown part {df.at[i, 'part_id']!r}"
            bad.append({"what": f"{f}:{i + 2}", "reason": why})
        frames.append(df[ok])
    if bad and known is not None:
        atomic_write_json(home.quarantine / "plant" / line / "rework.rejected.json", bad)
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["part_id", "outcome", "recorded_at", "station"])
    df = df.sort_values("recorded_at").drop_duplicates("part_id", keep="last")
    return pd.DataFrame({"part_id": df["part_id"], "label": df["outcome"].map(OUTCOME_LABEL).astype("float"),
                         "label_source": df["station"], "outcome": df["outcome"], "label_recorded_at": df["recorded_at"]}), bad


def publish(home: HomeLayout, store: ObjectStore, line: str, data: InspectionData) -> datasets.Manifest:
    table = pa.Table.from_pandas(data.parts.astype({"aoi_flag": "object"}).assign(
        aoi_flag=lambda d: d["aoi_flag"].map(lambda x: None if x is None or x != x else bool(x))), preserve_index=False)
    return datasets.publish(store, home.refs, DATA_KEY, line, {PARTS_TABLE: table},
                            {"configs": data.configs, "shifts": data.shifts, "quarantined": len(data.quarantined)})
