"""Occupant monitoring end to end: consented sessions -> studio model -> federated rounds -> gated model.

Each step publishes a manifest (digests of everything it read and wrote). A round starts from the
previous round's global model only if that round passed its privacy audit and budget; the model
that leaves for the engines is the newest round's, judged per slice on the consenting test vehicles.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from avops import datasets
from avops.home import HomeLayout
from avops.occupant import cabin, federated, model as net, privacy
from avops.occupant.config import OccupantConfig, round_key, round_number
from avops.registry import ModelRegistry, ModelVersion
from avops.registry.gated import PRODUCTION, settle
from avops.store import ObjectStore, atomic_write_bytes, open_store

MODEL = "occupant_monitoring"
CONSENTED_KEY = "occupant/consented_sessions"
STUDIO_KEY = "occupant/studio_model"
ROUNDS_KEY = "federated/rounds"
MODEL_KEY = "occupant/dms_model"
OCCUPANT_VERSION = "1"
FAULT_FILE = "planted_fault"  # simulation only: the vehicle's software carries this fault


class OccupantDataMissing(LookupError):
    """An upstream step has not run: the message says which."""


def round_partition(cohort: str, rnd: str) -> str:
    return f"{cohort}~{rnd}"


# ---------------------------------------------------------------------------------------------
# consented sessions (the only cabin frames the cloud may hold)


@dataclass
class Quarantined:
    file: str
    reason: str


def ingest_consented(home: HomeLayout, config: OccupantConfig, cohort: str, store: ObjectStore | None = None
                     ) -> tuple[datasets.Manifest, list[Quarantined]]:
    """Validate every consented session of the cohort; a bad file is moved to quarantine with its reason."""
    store = store or open_store(home)
    src = home.cabin_consented / cohort
    files = sorted(src.glob("*.npz")) if src.exists() else []
    frames, labels, inputs, bad = [], [], {}, []
    for f in files:
        try:
            fr, lab, meta = cabin.read_frames(f, config)
            if meta.get("split") not in ("studio", "eval"):
                raise cabin.CabinDataError(f"{f}: meta.split must be 'studio' or 'eval', found {meta.get('split')!r}")
        except cabin.CabinDataError as exc:
            q = home.quarantine / "cabin_consented" / cohort / f.name
            q.parent.mkdir(parents=True, exist_ok=True)
            f.replace(q)
            atomic_write_bytes(q.with_suffix(".reason.json"), pd.Series({"file": str(f), "reason": str(exc)}).to_json().encode())
            bad.append(Quarantined(str(f), str(exc)))
            continue
        inputs[f.name] = store.put_file(f)
        lab = lab.assign(session=f.stem, split=meta["split"])
        frames.append(fr)
        labels.append(lab)
    if not frames:
        raise OccupantDataMissing(f"no usable consented cabin sessions under {src} (quarantined: {len(bad)}): "
                                  "deliver studio and test-vehicle sessions there (simulator: avops fleet simulate-cabin)")
    all_frames = np.concatenate(frames)
    lab = pd.concat(labels, ignore_index=True)
    frames_sha = store.put_bytes(_npy(all_frames))
    m = datasets.publish(store, home.refs, CONSENTED_KEY, cohort, {"labels": pa.Table.from_pandas(lab, preserve_index=False)},
                         {"frames_sha256": frames_sha, "inputs": inputs, "quarantined": [q.__dict__ for q in bad],
                          "splits": {k: int(v) for k, v in lab["split"].value_counts().items()}})
    return m, bad


def _npy(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def _from_npy(data: bytes) -> np.ndarray:
    import io

    return np.load(io.BytesIO(data), allow_pickle=False)


def load_consented(home: HomeLayout, cohort: str, split: str, store: ObjectStore | None = None
                   ) -> tuple[np.ndarray, pd.DataFrame, datasets.Manifest]:
    store = store or open_store(home)
    m = datasets.current(store, home.refs, CONSENTED_KEY, cohort)
    if m is None:
        raise OccupantDataMissing(f"{CONSENTED_KEY}[{cohort}] has not been materialized")
    lab = datasets.read_table(store, m, "labels").to_pandas()
    frames = _from_npy(store.get_bytes(m.body["frames_sha256"]))
    idx = np.flatnonzero(lab["split"].to_numpy() == split)
    return frames[idx], lab.iloc[idx].reset_index(drop=True), m


# ---------------------------------------------------------------------------------------------
# the studio model (round 0)


def train_studio(home: HomeLayout, config: OccupantConfig, cohort: str, store: ObjectStore | None = None) -> datasets.Manifest:
    """The first model: trained centrally on the consented studio sessions (no DP needed: consented, in the cloud)."""
    store = store or open_store(home)
    frames, labels, src = load_consented(home, cohort, "studio", store)
    torch.manual_seed(config.simulator.seed)
    m = net.DriverStateNet(len(config.states))
    x = net.to_tensor(frames)
    y = torch.as_tensor(labels["state"].map({s: i for i, s in enumerate(config.states)}).to_numpy(), dtype=torch.long)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(config.simulator.seed)
    for _ in range(config.simulator.studio_epochs):
        m.train()
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(x[idx]), y[idx]).backward()
            opt.step()
    weights_sha = store.put_bytes(net.arrays_bytes(net.get_arrays(m)))
    return datasets.publish(store, home.refs, STUDIO_KEY, cohort, {},
                            {"weights_sha256": weights_sha, "consented_manifest": src.digest, "frames": int(len(frames)),
                             "epochs": config.simulator.studio_epochs, "code_version": OCCUPANT_VERSION})


# ---------------------------------------------------------------------------------------------
# federated rounds


def _pseudonym_key(home: HomeLayout, cohort: str) -> bytes:
    """The fleet side's per-cohort campaign secret: vehicles derive their pseudonyms from it."""
    p = home.vehicles / cohort / ".campaign_key"
    if not p.exists():
        atomic_write_bytes(p, secrets.token_bytes(32))
    return p.read_bytes()


def enrolled(home: HomeLayout, config: OccupantConfig, cohort: str) -> list[federated.Vehicle]:
    """The cohort's vehicles with a cabin store, as the cloud sees them: node id and pseudonym."""
    root = home.vehicles / cohort
    key = _pseudonym_key(home, cohort) if root.exists() else b""
    app = federated.secure_client_app if config.federated.secure_aggregation else federated.client_app
    out = []
    for vdir in sorted(p for p in root.glob("*") if (p / "cabin" / cabin.FRAMES_FILE).exists()) if root.exists() else []:
        pseudonym = hashlib.sha256(key + vdir.name.encode()).hexdigest()[:16]
        fault_file = vdir / FAULT_FILE
        fault = fault_file.read_text().strip() if fault_file.exists() else None
        out.append(federated.Vehicle(int(pseudonym[:8], 16), pseudonym, app(vdir, config, fault), vdir))
    return out


def frame_index(home: HomeLayout, config: OccupantConfig, cohort: str) -> tuple[dict[str, set[str]], list[bytes]]:
    """The vehicle half of the audit: each vehicle's frame digests, and the frames' bytes (stays on the vehicle side)."""
    index, blobs = {}, []
    for v in enrolled(home, config, cohort):
        fr, _, _ = cabin.read_frames(v.root / "cabin" / cabin.FRAMES_FILE, config)
        index[v.pseudonym] = set(cabin.frame_digests(fr))
        blobs += [np.ascontiguousarray(f).tobytes() for f in fr]
    return index, blobs


def round_manifest(home: HomeLayout, cohort: str, rnd: str, store: ObjectStore | None = None) -> datasets.Manifest | None:
    return datasets.current(store or open_store(home), home.refs, ROUNDS_KEY, round_partition(cohort, rnd))


def rounds_done(home: HomeLayout, config: OccupantConfig, cohort: str, store: ObjectStore | None = None) -> list[datasets.Manifest]:
    store = store or open_store(home)
    return [m for r in config.round_keys() if (m := round_manifest(home, cohort, r, store)) is not None]


def _vehicle_releases(home: HomeLayout, config: OccupantConfig, cohort: str, upto: int, store: ObjectStore) -> dict[str, list[privacy.Release]]:
    out: dict[str, list[privacy.Release]] = {}
    for r in range(1, upto + 1):
        m = round_manifest(home, cohort, round_key(r), store)
        if m is None:
            continue
        for v, rel in {**m.body.get("releases_assumed", {}), **m.body["releases"]}.items():
            out.setdefault(v, []).append(privacy.Release(**rel))
    return out


def verify_round(home: HomeLayout, config: OccupantConfig, cohort: str, m: datasets.Manifest, store: ObjectStore,
                 versioned: dict[str, set[str]] | None = None) -> dict:
    """Re-run the privacy audit of a published round from what the cloud holds, and the vehicles' half."""
    uplink = store.get_json(m.body["uplink_log_sha256"])
    index, blobs = frame_index(home, config, cohort)
    findings = privacy.audit_uplink(uplink, net.schema(len(config.states)), index, blobs, lambda d: store.get_bytes(d))
    findings += privacy.sweep(index, store.has, versioned or {})
    return {"passed": not findings, "findings": [f.to_dict() for f in findings], "frames_checked": sum(len(v) for v in index.values()),
            "uplinked_items": sum(len(r["items"]) for e in uplink for r in e["records"].values())}


def versioned_digests(repo) -> dict[str, set[str]]:
    """Every object digest on every branch of the dataset versioning backend."""
    if repo is None:
        return {}
    return {b: set(repo.list(b).values()) for b in repo.branches()}


@dataclass
class RoundResult:
    manifest: datasets.Manifest
    audit: dict
    budget: dict
    budget_findings: list[str]


def run_federated_round(home: HomeLayout, config: OccupantConfig, cohort: str, rnd: str, repo=None,
                        timeout_s: float | None = None) -> RoundResult:
    """Round ``rnd`` of the cohort: Flower over its enrolled vehicles, then the audit and the budget, published together."""
    store = open_store(home)
    n = round_number(rnd)
    if n > 1:
        prev = round_manifest(home, cohort, round_key(n - 1), store)
        if prev is None:
            raise OccupantDataMissing(f"{ROUNDS_KEY}[{cohort}|{round_key(n - 1)}] has not run: rounds run in order")
        if not prev.body["audit"]["passed"] or prev.body["budget_findings"]:
            raise federated.RoundFailed(f"round {round_key(n - 1)} of {cohort} failed its privacy audit or budget "
                                        f"({prev.body['audit']['findings'][:1] or prev.body['budget_findings'][:1]}): "
                                        "nothing builds on it; purge the leaked data, fix the vehicle software, and rerun that round")
        start_sha = prev.body["global_sha256"]
    else:
        studio = datasets.current(store, home.refs, STUDIO_KEY, cohort)
        if studio is None:
            raise OccupantDataMissing(f"{STUDIO_KEY}[{cohort}] has not been materialized: round r001 starts from it")
        start_sha = studio.body["weights_sha256"]
    initial = net.arrays_from_bytes(store.get_bytes(start_sha))
    vehicles = enrolled(home, config, cohort)
    t0 = time.time()
    out = federated.run_round(config, vehicles, initial, n, store.put_bytes, seed=config.simulator.seed, timeout_s=timeout_s)
    uplink = [e.__dict__ for e in out.uplink]
    uplink_sha = store.put_json(uplink)
    global_sha = store.put_bytes(net.arrays_bytes(out.weights))
    dp = config.federated.dp
    releases, reported = {}, {}
    for pseudonym, update in out.updates.items():
        met = update["metrics"]
        releases[pseudonym] = {"noise_multiplier": dp.noise_multiplier, "sample_rate": float(met["dp-sample-rate"]),
                                 "steps": int(met["dp-steps"]), "population": int(met["num-examples"])}
        reported[pseudonym] = float(met["epsilon"])
    history = _vehicle_releases(home, config, cohort, n - 1, store)
    fed = config.federated
    assumed = {}  # invited, no update: it may have trained (and spent budget) before its link dropped
    for v in out.dropped:
        if history.get(v):
            pop = history[v][-1].population
            assumed[v] = {"noise_multiplier": dp.noise_multiplier, "sample_rate": min(1.0, fed.batch_size / pop),
                          "steps": fed.local_epochs * max(1, round(pop / fed.batch_size)), "population": pop}
    budget = {}
    for v, rel in releases.items():
        budget[v] = {"reported": reported[v], "recomputed": privacy.cloud_epsilon(history.get(v, []) + [privacy.Release(**rel)], dp.delta)}
    bfind = privacy.budget_findings(budget, dp.max_epsilon)
    body = {"cohort": cohort, "round": rnd, "initial_sha256": start_sha, "global_sha256": global_sha, "uplink_log_sha256": uplink_sha,
            "invited": out.invited, "participants": sorted(releases), "dropped": out.dropped,
            "declined": {e.pseudonym: e.error for e in out.uplink if e.error},
            "update_digests": {v: store.put_json(u["digests"]) for v, u in out.updates.items()},
            "aggregation": config.federated.aggregation, "secure_aggregation": config.federated.secure_aggregation, "min_participants": config.federated.min_participants,
            "dp": {"mechanism": "DP-SGD in each vehicle (Opacus), Poisson sampling, RDP accounting", "max_grad_norm": dp.max_grad_norm,
                   "noise_multiplier": dp.noise_multiplier, "delta": dp.delta, "max_epsilon": dp.max_epsilon},
            "releases": releases, "releases_assumed": assumed, "epsilon": budget, "epsilon_max": max((b["recomputed"] for b in budget.values()), default=0.0),
            "budget_findings": bfind, "train_metrics": out.metrics, "seconds": round(time.time() - t0, 2), "code_version": OCCUPANT_VERSION}
    audit = verify_round(home, config, cohort, datasets.Manifest("", body), store, versioned_digests(repo))
    body["audit"] = audit
    m = datasets.publish(store, home.refs, ROUNDS_KEY, round_partition(cohort, rnd), {}, body)
    return RoundResult(m, audit, budget, bfind)


# ---------------------------------------------------------------------------------------------
# evaluation, gates, registry


def evaluate(weights: dict[str, np.ndarray], frames: np.ndarray, labels: pd.DataFrame, config: OccupantConfig) -> pd.DataFrame:
    m = net.DriverStateNet(len(config.states))
    net.set_arrays(m, weights)
    return net.slice_table(net.predict(m, frames), labels, config.states)


def slice_gates(table: pd.DataFrame, config: OccupantConfig) -> list[dict]:
    """Overall floor, a floor for every slice (insufficient evidence fails), and the worst-to-best gap."""
    g = config.gates
    gates = []
    overall = float(table.loc[table["attribute"] == "all", "accuracy"].iloc[0])
    gates.append({"gate": "overall", "status": "pass" if overall >= g.overall_min else "fail", "blocks": overall < g.overall_min,
                  "value": overall, "threshold": g.overall_min, "reason": f"accuracy {overall:.3f} vs floor {g.overall_min}"})
    expected = {("state", s) for s in config.states} | {(a, v) for a, vs in config.slices.items() for v in vs}
    have = {(r.attribute, r.value): r for r in table.itertuples() if r.attribute != "all"}
    judged = []
    for a, v in sorted(expected):
        r = have.get((a, v))
        n = 0 if r is None else int(r.frames)
        name = f"{a}={v}"
        if n < g.min_samples:
            gates.append({"gate": name, "status": "insufficient", "blocks": True, "value": None, "threshold": g.slice_min, "frames": n,
                          "reason": f"{n} held-out frames < min_samples {g.min_samples}: no evidence for this slice"})
            continue
        acc = float(r.accuracy)
        judged.append((acc, name))
        gates.append({"gate": name, "status": "pass" if acc >= g.slice_min else "fail", "blocks": acc < g.slice_min, "value": acc,
                      "threshold": g.slice_min, "frames": n, "reason": f"accuracy {acc:.3f} on {n} frames vs floor {g.slice_min}"})
    if judged:
        (lo, worst), (hi, best) = min(judged), max(judged)
        gap = hi - lo
        gates.append({"gate": "fairness_gap", "status": "pass" if gap <= g.max_gap else "fail", "blocks": gap > g.max_gap, "value": gap,
                      "threshold": g.max_gap, "worst": worst, "best": best,
                      "reason": f"best slice {best} {hi:.3f} - worst {worst} {lo:.3f} = {gap:.3f} vs max {g.max_gap}"})
    return gates


@dataclass
class ModelResult:
    version: ModelVersion
    round: str
    table: pd.DataFrame
    gates: list[dict]
    evidence_sha256: str
    eval_manifest: str


def latest_round(home: HomeLayout, config: OccupantConfig, cohort: str, store: ObjectStore) -> datasets.Manifest:
    done = rounds_done(home, config, cohort, store)
    if not done:
        raise OccupantDataMissing(f"no federated round of {cohort} has run yet: materialize {ROUNDS_KEY} r001 first")
    m = done[-1]
    if not m.body["audit"]["passed"] or m.body["budget_findings"]:
        raise federated.RoundFailed(f"the newest round of {cohort} ({m.body['round']}) failed its privacy audit or budget: "
                                    "its model is not promoted; fix the cause and rerun that round")
    return m


def promote(home: HomeLayout, registry: ModelRegistry, config: OccupantConfig, cohort: str, actor: str,
            run_id: str | None = None) -> ModelResult:
    """Judge the newest audited round's global model on the consenting test vehicles and settle it in the registry."""
    store = open_store(home)
    m = latest_round(home, config, cohort, store)
    frames, labels, consented = load_consented(home, cohort, "eval", store)
    weights = net.arrays_from_bytes(store.get_bytes(m.body["global_sha256"]))
    table = evaluate(weights, frames, labels, config)
    gates = slice_gates(table, config)
    evidence = {"cohort": cohort, "round": m.body["round"], "round_manifest": m.digest, "eval_manifest": consented.digest,
                "eval_vehicles": sorted(set(labels["session"])), "slices": table.to_dict(orient="records"), "gates": gates,
                "privacy": {"epsilon_max": m.body["epsilon_max"], "delta": m.body["dp"]["delta"], "audit_passed": m.body["audit"]["passed"]}}
    evidence_sha = store.put_json(evidence)
    lineage = {"round_manifest": m.digest, "rounds": {r.body["round"]: r.digest for r in rounds_done(home, config, cohort, store)},
               "eval_manifest": consented.digest, "evidence_sha256": evidence_sha, "federated": True}
    version = registry.register(MODEL, cohort, m.body["global_sha256"], lineage,
                                {"accuracy": float(table.loc[0, "accuracy"]), "epsilon_max": m.body["epsilon_max"]}, actor,
                                f"federated round {m.body['round']} global model", run_id)
    version = settle(registry, version, gates, evidence_sha, "occupant slice gates",
                     "driver monitoring model runs on the in-cabin ECU: released when its slice gates pass", actor, run_id, {"cohort": cohort})
    datasets.publish(store, home.refs, MODEL_KEY, cohort, {"slices": pa.Table.from_pandas(table, preserve_index=False)},
                     {"version": version.version, "stage": version.stage, "evidence_sha256": evidence_sha, "round": m.body["round"]})
    return ModelResult(version, m.body["round"], table, gates, evidence_sha, consented.digest)


def production(registry: ModelRegistry, cohort: str) -> ModelVersion | None:
    return registry.resolve_alias(MODEL, cohort, PRODUCTION)
