"""The dossier as one self-contained HTML page: inline CSS and SVG charts, nothing fetched from a network."""

from __future__ import annotations

import html
import json

CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em} h2{border-bottom:2px solid #345;padding-bottom:.2em;margin-top:2em} h3{margin-bottom:.3em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em} td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#eef} code{font-size:.85em;background:#f4f4f4;padding:0 .2em}
.pass{color:#176d2c;font-weight:bold} .fail{color:#b00020;font-weight:bold} .open{background:#fff3cd;color:#7a5a00;font-weight:bold}
.verdict{font-size:1.2em;padding:.5em;border-radius:4px;display:inline-block} .ok{background:#d8f3dc} .bad{background:#f8d7da}
details{margin:.4em 0} .small{font-size:.8em;color:#555}
"""


def _e(x) -> str:
    return html.escape("" if x is None else str(x))


def _table(rows: list[dict], cols: list[str]) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if v == 0 or abs(v) >= 1e-3 else f"{v:.1e}"  # δ = 1e-5 is not 0.000
    if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
        return f"<code title='{v}'>{v[:12]}</code>"
    if isinstance(v, str) and v.startswith("OPEN"):
        return f"<span class='open'>{_e(v)}</span>"
    if v in ("pass", "filled", True):
        return f"<span class='pass'>{_e(v)}</span>"
    if v in ("fail", "insufficient_evidence", False) or (isinstance(v, str) and v.startswith(("missing", "FAILED", "rejected"))):
        return f"<span class='fail'>{_e(v)}</span>"
    if isinstance(v, (list, dict)):
        return f"<code>{_e(json.dumps(v, default=str)[:300])}</code>"
    return _e(v)


def bars_svg(title: str, rows: list[tuple[str, float, float | None, bool]], width: int = 640) -> str:
    """Horizontal bars (value 0..1) with a threshold tick per row; red when the row failed."""
    h = 22 * len(rows) + 34
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{h}' role='img' aria-label='{_e(title)}'>",
           f"<text x='4' y='16' font-size='13' font-weight='bold'>{_e(title)}</text>"]
    x0, span = 130, width - 190
    for i, (name, value, threshold, ok) in enumerate(rows):
        y = 28 + 22 * i
        w = max(0.0, min(1.0, value or 0.0)) * span
        out.append(f"<text x='4' y='{y + 13}' font-size='12'>{_e(name)}</text>")
        out.append(f"<rect x='{x0}' y='{y}' width='{span}' height='16' fill='#eee'/>")
        out.append(f"<rect x='{x0}' y='{y}' width='{w:.1f}' height='16' fill='{'#4c9a2a' if ok else '#c0392b'}'/>")
        if threshold is not None:
            tx = x0 + max(0.0, min(1.0, threshold)) * span
            out.append(f"<line x1='{tx:.1f}' x2='{tx:.1f}' y1='{y - 2}' y2='{y + 18}' stroke='#000' stroke-width='2'/>")
        out.append(f"<text x='{x0 + span + 6}' y='{y + 13}' font-size='12'>{(value or 0):.2f}</text>")
    out.append("</svg>")
    return "".join(out)


def render_html(doc: dict) -> str:
    s = doc["sections"]
    subj = doc["subject"]
    verdict_ok = doc["gates_verdict"] == "passed"
    gates = s["gate_results"]["gates"]
    gate_svg = bars_svg("95% lower bound of recall per ODD slice (tick: threshold)",
                        [(g["gate"], g["lower_bound"], g["threshold"], g["status"] == "pass" or not g["blocks"]) for g in gates])
    shadow = s["field_monitoring"]["shadow_mode"]
    shadow_svg = bars_svg("shadow mode: disagreement rate with production per slice",
                          [(r["slice"], (r["disagreeing"] / r["frames"]) if r["frames"] else 0.0, None, True) for r in shadow]) if shadow else ""
    parity = (s["tool_confidence"] or {}).get("equivalence_per_slice", {})
    parity_rows = [{"slice": k, **v} for k, v in parity.items()]
    lin = doc["lineage"]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>avops dossier {_e(doc['cohort'])}</title><style>{CSS}</style></head><body>",
        f"<h1>Compliance dossier: {_e(doc['cohort'])}, {_e(subj['component'])} v{_e(subj['model_version'])}</h1>",
        f"<p class='small'>generated {_e(doc['generated_at'])} · run {_e(doc.get('run_id'))} · engine <code>{_e(subj['engine'])}</code></p>",
        (f"<p class='verdict bad'>No OTA package: {_e(doc['no_package'])}. The software-update sections are missing, "
         "not filled.</p>" if doc.get("no_package") else ""),
        f"<p class='verdict {'ok' if verdict_ok else 'bad'}'>Safety gates: {_e(doc['gates_verdict'])}</p>",
        f"<p>Lineage: {'verified' if lin['verified'] else '<span class=fail>NOT verified</span>'} "
        f"({len(lin['nodes'])} nodes, every digest recomputed from stored bytes). Open items (a person must supply): "
        f"<span class='open'>{len(doc['open_items'])}</span>.</p>",
        "<h2>Regime mapping</h2>", _table(doc["mapping"], ["regime", "clause", "asks", "evidence", "status"]),
        "<h2>ISO 26262</h2><h3>Configuration baseline</h3>",
        _table([{"artifact": k, "sha256": v} for k, v in s["configuration_baseline"]["artifacts"].items()], ["artifact", "sha256"]),
        f"<p>code: {_cell(s['configuration_baseline']['code'])}</p>",
        "<h3>Change impact</h3>", f"<p>{_e(s['change_impact'].get('summary'))}</p>",
        _table(s["change_impact"].get("metric_deltas", []), ["gate", "before", "after", "delta"]),
        "<h3>Tool confidence: engine vs FP32 reference per slice</h3>",
        f"<p>{_e((s['tool_confidence'] or {}).get('compiler', 'no engine: no package'))}, "
        f"{_e((s['tool_confidence'] or {}).get('precision'))}</p>",
        _table(parity_rows, ["slice", "fp32", "engine", "drop", "max_drop", "objects", "passed"]),
        "<h2>ISO 21448 SOTIF</h2>", gate_svg,
        _table(gates, ["gate", "metric", "value", "lower_bound", "threshold", "samples", "min_samples", "status", "reason"]),
        f"<h3>Incident replay</h3><p>{s['incident_replay']['passed']}/{s['incident_replay']['replayed']} incidents passed; "
        f"regressions: {_cell(s['incident_replay']['regressions'] or 'none')}</p>",
        "<h3>Field monitoring</h3>", shadow_svg, f"<p>drift: {_e(s['field_monitoring']['drift'])}</p>",
        "<h3>ODD exposure (frames)</h3>", _table([{"attribute": k, "frames": v} for k, v in s["odd"]["exposure_frames"].items()],
                                                  ["attribute", "frames"]),
        "<h2>ISO/PAS 8800: dataset lifecycle</h2>",
        f"<p>dataset commit <code>{_e(s['dataset_provenance']['dataset_commit'])}</code>, "
        f"{len(s['dataset_provenance']['files_read'])} files read by training, "
        f"{len(s['dataset_provenance']['landed_file_sha256'])} landed drive files traced.</p>",
        f"<p>split independence: {_cell(s['split_independence'])}</p><p>labeling: {_cell(s['labeling'])}</p>",
        f"<p>slice coverage: {_cell(s['slice_coverage'])}</p><p>frameworks: {_cell(s['frameworks'])}</p>",
        "<h2>EU AI Act, Annex IV</h2>", f"<p>architecture: {_cell(s['architecture'])}</p>",
        "<h3>Change log</h3>", _table(s["change_log"], ["at", "kind", "path", "model_version", "release_counter", "reason"]),
        "<h2>UNECE R156 / R155</h2>",
        _table([s["software_identification"]], list(s["software_identification"])) if s["software_identification"] else
        "<p><span class='fail'>missing: no software update package</span></p>",
        f"<p>configuration change: {_cell(s['configuration_change'])}</p>",
        f"<p>integrity: {_cell(s['integrity'])}</p><p>target vehicles: {_cell(s['target_vehicles'])}</p>",
        "<h3>Signing keys</h3>", _table([{"role": r, "keys": k} for r, k in s["signing_keys"].items()], ["role", "keys"]),
        "<h3>Security tests of the update path (run when this dossier was generated)</h3>",
        _table(s["security_tests"], ["test", "expected", "outcome", "passed"]),
        f"<p>SBOM: {_cell(s['sbom'])}</p>",
        *_occupant_html(s),
        "<h2>Open items</h2>", _table(doc["open_items"], ["regime", "clause", "asks", "value"]),
        "<h2>Approvals recorded by people (audit log)</h2>",
        _table(s.get("approvals", []), ["event", "at", "by", "statement"]) if s.get("approvals") else
        "<p><span class='open'>none recorded: `avops audit approve --subject "
        f"{_e(subj['component'])}/v{_e(subj['model_version'])} --by NAME --statement TEXT`</span></p>",
        "<h2>Lineage</h2>", _table([{"kind": n["kind"], "label": n["label"], "sha256": n["digest"], "verified": n["verified"],
                                      "problems": "; ".join(n["problems"])} for n in lin["nodes"]],
                                     ["kind", "label", "sha256", "verified", "problems"]),
        "<h2>Notes</h2>", "".join(f"<p>{_e(n)}</p>" for n in doc["notes"]),
        "</body></html>",
    ]
    return "\n".join(parts)


def _occupant_html(s: dict) -> list[str]:
    """Occupant monitoring: slice accuracy against the floors, the privacy budget per round, the no-upload proof."""
    om, op = s.get("occupant_monitoring"), s.get("occupant_privacy")
    if not om:
        return []
    from avops.occupant.evidence import slices_for_dossier

    cap = op["budget"]["max_epsilon"] or 1.0
    budget_svg = bars_svg(f"privacy budget spent after each round (ε at δ={op['budget']['delta']:g}, bar 0 … {cap:g})",
                          [(r["round"], r["epsilon_max"] / cap, None, r["no_upload_audit"] == "passed") for r in op["rounds"]])
    return ["<h2>Occupant monitoring</h2>",
            f"<p>model {_e(om['model']['name'])} v{_e(om['model']['version'])} ({_e(om['model']['stage'])}), round {_e(om['model']['round'])}: "
            f"slice gates {_e(om['verdict'])}</p>",
            bars_svg("accuracy per slice on the consenting test vehicles (tick: floor)", slices_for_dossier(om)),
            "<h3>Privacy</h3>", f"<p>{_e(op['design'])}</p>", f"<p>what leaves the vehicle: {_cell(op['what_leaves_the_vehicle'])}</p>",
            budget_svg,
            _table(op["rounds"], ["round", "participants", "dropped", "epsilon_max", "delta", "noise_multiplier", "clipping_norm",
                                  "secure_aggregation", "no_upload_audit", "findings", "frames_checked", "uplink_log_sha256"]),
            f"<p>{_e(op['no_upload_proof'])}</p>",
            "<p><span class='open'>for a person: " + _e("; ".join(om["open_for_a_person"] + op["open_for_a_person"])) + "</span></p>"]
