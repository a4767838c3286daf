"""What people look at: slice accuracy as bars against the gate, and the privacy budget round by round."""

from __future__ import annotations

import pandas as pd

_ICON = {"pass": "✅", "fail": "⛔", "insufficient": "⚠️"}


def bar(value: float, width: int = 20) -> str:
    n = max(0, min(width, round(value * width)))
    return "█" * n + "·" * (width - n)


def slices_markdown(table: pd.DataFrame, gates: list[dict]) -> str:
    """Accuracy per slice on the consenting test vehicles, a bar each, with the gate's verdict."""
    by_gate = {g["gate"]: g for g in gates}
    rows = ["accuracy on the held-out consenting test vehicles (bar: 0 … 1)", "",
            "| slice | frames | accuracy | | gate |", "|---|---:|---:|---|---|"]
    for r in table.itertuples():
        name = "overall" if r.attribute == "all" else f"{r.attribute}={r.value}"
        g = by_gate.get(name)
        verdict = f"{_ICON[g['status']]} ≥ {g['threshold']:g}" if g else ""
        rows.append(f"| {name} | {r.frames} | {r.accuracy:.3f} | `{bar(r.accuracy)}` | {verdict} |")
    gap = by_gate.get("fairness_gap")
    if gap:
        rows += ["", f"**fairness gap** {_ICON[gap['status']]} {gap['reason']}"]
    return "\n".join(rows)


def budget_markdown(rounds: list[dict]) -> str:
    """ε spent so far (the most-spent vehicle) after each round, as bars against the budget."""
    if not rounds:
        return "no round yet"
    cap = rounds[-1]["dp"]["max_epsilon"]
    rows = [f"privacy budget per vehicle: ε at δ={rounds[-1]['dp']['delta']:g}, bar 0 … max_epsilon {cap:g}", "",
            "| round | vehicles | dropped | ε (max over vehicles) | | audit |", "|---|---:|---:|---:|---|---|"]
    for b in rounds:
        eps = b["epsilon_max"]
        audit = "✅ no cabin data uploaded" if b["audit"]["passed"] else f"⛔ {len(b['audit']['findings'])} finding(s)"
        rows.append(f"| {b['round']} | {len(b['participants'])} | {len(b['dropped'])} | {eps:.2f} | `{bar(eps / cap)}` | {audit} |")
    return "\n".join(rows)


def findings_markdown(findings: list[dict]) -> str:
    if not findings:
        return "no finding"
    rows = ["| kind | vehicle (pseudonym) | where | detail |", "|---|---|---|---|"]
    rows += [f"| {f['kind']} | {f['vehicle']} | {f['where']} | {f['detail']} |" for f in findings[:100]]
    return "\n".join(rows)
