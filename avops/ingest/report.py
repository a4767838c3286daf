"""Human-facing summaries of an ingest: ODD exposure as bar charts, quarantine as a table."""

from __future__ import annotations

from avops import datasets
from avops.home import HomeLayout
from avops.ingest.quarantine import Quarantined
from avops.store import open_store


def bar_chart(title: str, values: dict[str, float], unit: str, width: int = 24) -> str:
    """A Markdown bar chart that renders in the Dagster UI and in a terminal alike."""
    if not values:
        return f"**{title}**: no data\n"
    top = max(values.values()) or 1.0
    lines = [f"**{title}**", "", "| | | |", "|---|---|---:|"]
    for k, v in sorted(values.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {k} | `{'█' * max(1, round(width * v / top))}` | {v:.1f} {unit} |")
    return "\n".join(lines) + "\n"


def odd_exposure(home: HomeLayout, manifest: datasets.Manifest) -> dict[str, dict[str, float]]:
    """Minutes of driving per ODD attribute value (context is reported at 1 Hz)."""
    if "odd_context" not in manifest.tables:
        return {}
    df = datasets.read_table(open_store(home), manifest, "odd_context").to_pandas()
    df = df.sort_values(["drive_id", "timestamp"])
    dt = df.groupby("drive_id")["timestamp"].diff().fillna(1.0).clip(upper=5.0)
    df["minutes"] = dt / 60
    out = {}
    for col in ("illumination", "weather", "road_type"):
        out[col] = df.groupby(col)["minutes"].sum().round(2).to_dict()
    out["roadworks"] = df.groupby(df["roadworks"].map({True: "roadworks", False: "no roadworks"}))["minutes"].sum().round(2).to_dict()
    return out


def odd_exposure_markdown(home: HomeLayout, manifest: datasets.Manifest) -> str:
    exposure = odd_exposure(home, manifest)
    if not exposure:
        return "No MCAP drives with vehicle context in this partition (CAN-only logs carry no ODD context)."
    return "\n".join(bar_chart(f"Exposure by {k}", v, "min") for k, v in exposure.items())


def quarantine_markdown(items: list[Quarantined]) -> str:
    if not items:
        return "No file was quarantined."
    rows = ["| file | reason | detail | moved to |", "|---|---|---|---|"]
    rows += [f"| {q.original} | {q.reason} | {q.detail[:160].replace('|', '/')} | {q.moved_to} |" for q in items]
    return "\n".join(rows)
