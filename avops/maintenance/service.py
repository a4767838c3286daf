"""Service orders from the workshop (dealer management) export: validated, bad rows quarantined.

A workshop export is typed by hand somewhere: a row with an unknown vehicle, a thickness of
"n/a" or a visit after its own recording time is set aside with the reason (file, line,
problem) in ``quarantine/workshop/<cohort>/``; every other row is still used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pandera.pandas as pa

from avops.home import HomeLayout
from avops.store import atomic_write_json, sha256_file

# The dealer management export, one row per workshop operation (``operation``: inspection | replaced).
SERVICE_COLUMNS = ["order_id", "vehicle_id", "workshop_id", "visit_time", "recorded_at", "odometer_km", "operation",
                   "component", "measured_mm"]

SERVICE_ORDERS = pa.DataFrameSchema(
    {
        "order_id": pa.Column(str, pa.Check.str_length(min_value=1)),
        "vehicle_id": pa.Column(str, pa.Check.str_length(min_value=1)),
        "workshop_id": pa.Column(str),
        "visit_time": pa.Column("datetime64[ns, UTC]"),
        "recorded_at": pa.Column("datetime64[ns, UTC]"),
        "odometer_km": pa.Column(float, pa.Check.ge(0)),
        "operation": pa.Column(str, pa.Check.isin(["inspection", "replaced"])),
        "component": pa.Column(str),
        "measured_mm": pa.Column(float, pa.Check.in_range(0.0, 20.0)),
    },
    checks=pa.Check(lambda df: df["recorded_at"] >= df["visit_time"], error="recorded before the visit"),
    unique=["order_id"],
    name="service_orders",
)


@dataclass
class ServiceRecords:
    orders: pd.DataFrame
    source: Path
    sha256: str
    rejected: list[dict]


def _coerce(raw: pd.DataFrame) -> pd.DataFrame:
    df = raw.copy()
    for c in ("visit_time", "recorded_at"):
        df[c] = pd.to_datetime(df[c], utc=True, errors="coerce", format="ISO8601")
    for c in ("odometer_km", "measured_mm"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    return df


def load_service_orders(home: HomeLayout, cohort: str, vehicles: set[str] | None = None) -> ServiceRecords:
    """Every valid service order of a cohort; each invalid row is quarantined with its reason."""
    path = home.workshop / cohort / "service_orders.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no workshop export for cohort {cohort}; the dealer management system delivers "
                                "service_orders.csv there (the simulator writes it with `avops fleet simulate`)")
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in SERVICE_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"{path}: columns {missing} missing; a service order export has {SERVICE_COLUMNS}")
    df = _coerce(raw[SERVICE_COLUMNS])
    try:
        SERVICE_ORDERS.validate(df, lazy=True)
        bad_index: dict[int, str] = {}
    except pa.errors.SchemaErrors as e:
        bad_index = {}
        for _, case in e.failure_cases.iterrows():
            idx, column = case["index"], case["column"]
            if idx is None or pd.isna(idx):  # a whole-column problem: the export itself is malformed
                raise ValueError(f"{path}: {column or 'table'}: {case['check']} failed ({case['failure_case']}); "
                                 "fix the workshop export and deliver it again") from e
            value = raw.at[int(idx), column] if column in raw.columns else case["failure_case"]
            bad_index.setdefault(int(idx), f"{column or 'row'}: {case['check']} failed (value {value!r})")
    if vehicles is not None:
        for i, v in df["vehicle_id"].items():
            if v not in vehicles:
                bad_index.setdefault(int(i), f"vehicle_id: {v!r} is not a vehicle of cohort {cohort}")
    rejected = [{"file": str(path), "line": i + 2, "order_id": raw.at[i, "order_id"], "problem": why,
                 "row": raw.loc[i].to_dict()} for i, why in sorted(bad_index.items())]
    if rejected:
        qdir = home.quarantine / "workshop" / cohort
        digest = sha256_file(path)
        atomic_write_json(qdir / f"service_orders.{digest[:12]}.rejected.json", {"source": str(path), "sha256": digest, "rows": rejected})
    good = df.drop(index=list(bad_index)).reset_index(drop=True)
    return ServiceRecords(good, path, sha256_file(path), rejected)


def known_at(orders: pd.DataFrame, when: pd.Timestamp) -> pd.DataFrame:
    """The orders the backend had received by ``when`` (point in time for labels)."""
    return orders[orders["recorded_at"] <= when]


def rejected_summary(records: ServiceRecords) -> str:
    return json.dumps([{k: r[k] for k in ("line", "order_id", "problem")} for r in records.rejected])
