"""The privacy guarantee, checked: the budget each vehicle spent, and proof that no cabin data reached the cloud.

Two accountants, independent of each other: each vehicle keeps its own ledger with Opacus' RDP
accountant (``avops.occupant.federated.vehicle_epsilon``); the cloud recomputes every vehicle's
ε from the round configuration and the counts the vehicle reported, with Flower's accountant
(Google's ``dp-accounting``). The round's check requires both to agree and to stay under the
policy's ``max_epsilon``.

The no-upload audit has a vehicle half and a cloud half. The vehicle knows its frames (their
sha256 and bytes); the cloud knows everything that reached it (the uplink log of each round,
the object store, the dataset versioning backend). The audit looks for any frame, whole or
embedded in a larger blob, in all of them, and for anything in the uplink that is not a model
update of the agreed schema (per-sample data: predictions, embeddings, labels, images).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

ALLOWED_METRICS = frozenset({"num-examples", "train-loss", "epsilon", "dp-steps", "dp-sample-rate"})
UPDATE_RECORD, METRIC_RECORD = "arrays", "metrics"
# Under SecAgg+ (Flower's legacy FitRes records plus the protocol's own): public keys, encrypted key shares, the
# masked update vector and, to unmask, shares of the keys of vehicles that dropped. Everything else is a finding.
SECAGG_RECORD, LEGACY_METRICS_RECORD = "secaggplus_configs", "fitres.metrics"
SECAGG_KEYS = frozenset({"pk1", "pk2", "ctxts", "dsts", "masked_params", "nids", "shares"})
LEGACY_RECORDS = {(LEGACY_METRICS_RECORD, "config"): "metrics", ("fitres.num_examples", "metrics"): "count",
                  ("fitres.parameters", "arrays"): "empty", ("fitres.status", "config"): "status", (SECAGG_RECORD, "config"): "secagg"}
EPSILON_TOLERANCE = 0.05  # relative: the two accountants use different orders and conversions


@dataclass(frozen=True)
class Release:
    """One vehicle's DP-SGD work in one round: ``steps`` Poisson-sampled Gaussian releases."""

    noise_multiplier: float
    sample_rate: float
    steps: int
    population: int  # the vehicle's frames


def cloud_epsilon(releases: list[Release], delta: float) -> float:
    """ε of a vehicle's releases by Flower's RDP accountant (dp-accounting), from the cloud's records alone."""
    from flwr.serverapp import GaussianPrivacyEvent, NeighboringRelation, PrivacyConfig, RdpAccountant, SamplingMethod

    if not releases:
        return 0.0
    pops = {r.population for r in releases}
    if len(pops) != 1:
        raise ValueError(f"a vehicle's frame count changed between rounds ({sorted(pops)}): its ledger cannot be recomputed")
    pop = pops.pop()
    acc = RdpAccountant(PrivacyConfig(target_delta=delta, population_size=pop, neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                                      sampling_method=SamplingMethod.POISSON),
                        orders=tuple([2 + i * 0.5 for i in range(36)] + [24, 28, 32, 40, 48, 64, 96, 128, 256]))
    for r in releases:
        acc.compose(GaussianPrivacyEvent(noise_multiplier=r.noise_multiplier, sample_size=max(1, round(r.sample_rate * pop)),
                                         population_size=pop), count=r.steps)
    return float(acc.get_epsilon(delta))


def budget_findings(per_vehicle: dict[str, dict], max_epsilon: float) -> list[str]:
    """Problems with the budget: a vehicle over ``max_epsilon`` (by the larger of the two accountants), or a
    vehicle that spent more than the cloud's ledger accounts for (the cloud counts a vehicle that was
    invited but never answered as having trained: over-counting is safe, under-counting is not)."""
    out = []
    for v, b in sorted(per_vehicle.items()):
        reported, recomputed = b.get("reported"), b.get("recomputed")
        if reported is None or recomputed is None or not math.isfinite(reported):
            out.append(f"{v}: no usable ε reported ({reported!r})")
            continue
        if max(reported, recomputed) > max_epsilon + 1e-9:
            out.append(f"{v}: ε={max(reported, recomputed):.2f} exceeds max_epsilon {max_epsilon}")
        if reported > recomputed * (1 + EPSILON_TOLERANCE) + 1e-9:
            out.append(f"{v}: reports ε={reported:.3f}, more than the cloud's accountant computes ({recomputed:.3f}) for the releases it knows of")
    return out


@dataclass(frozen=True)
class Finding:
    kind: str        # frame | embedded_frame | unexpected_record | unexpected_array | unexpected_metric | cloud_store | versioning
    vehicle: str     # pseudonym of the sender (or "-" for a sweep)
    where: str
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


def audit_uplink(uplink: list[dict], schema: dict[str, tuple[int, ...]], frame_index: dict[str, set[str]],
                 frames: Iterable[bytes], read: Callable[[str], bytes]) -> list[Finding]:
    """Everything the vehicles sent in one round, against the model schema and every cabin frame.

    ``uplink``: the round's log entries; ``frame_index``: vehicle -> sha256 of its frames (the vehicle
    half); ``frames``: the frames' bytes, to find one embedded in a larger blob; ``read``: the cloud
    store's reader for an uplinked digest."""
    findings: list[Finding] = []
    all_frames = set().union(*frame_index.values()) if frame_index else set()
    frame_bytes = [f for f in frames if f]
    for e in uplink:
        who = e["pseudonym"]
        for name, rec in e.get("records", {}).items():
            kind = rec["kind"]
            role = LEGACY_RECORDS.get((name, kind))
            if (name, kind) not in ((UPDATE_RECORD, "arrays"), (METRIC_RECORD, "metrics")) and role is None:
                findings.append(Finding("unexpected_record", who, f"record {name!r}", f"a {kind} record that is not part of a model update"))
            for key, item in rec["items"].items():
                where = f"{name}.{key}"
                digest = item.get("sha256")
                if kind == "arrays" and name == UPDATE_RECORD:
                    if key not in schema or tuple(item["shape"]) != tuple(schema[key]) or item["dtype"] != "float32":
                        findings.append(Finding("unexpected_array", who, where, f"{item['dtype']} {item['shape']} is not a weight of the model"))
                if (kind == "metrics" and role is None) or role == "metrics":
                    if key not in ALLOWED_METRICS or not isinstance(item.get("value"), (int, float)):
                        findings.append(Finding("unexpected_metric", who, where, "not one of the scalar metrics a vehicle may report"))
                if role == "empty":
                    findings.append(Finding("unexpected_array", who, where, "under SecAgg+ the update travels masked, never in the clear"))
                if role == "secagg" and key.split("[", 1)[0] not in SECAGG_KEYS:
                    findings.append(Finding("unexpected_record", who, where, "not a field of the SecAgg+ protocol"))
                if role == "count" and (key != "num_examples" or not isinstance(item.get("value"), int)):
                    findings.append(Finding("unexpected_metric", who, where, "not the update's example count"))
                if role == "status" and key not in ("code", "message"):
                    findings.append(Finding("unexpected_record", who, where, "not a field of a reply status"))
                if digest is None:
                    continue
                if digest in all_frames:
                    owner = next((v for v, d in frame_index.items() if digest in d), "?")
                    findings.append(Finding("frame", who, where, f"cabin frame sha256:{digest} of vehicle {owner}"))
                    continue
                blob = read(digest)
                for fb in frame_bytes:
                    if len(blob) > len(fb) and fb in blob:
                        findings.append(Finding("embedded_frame", who, where, f"contains the bytes of a cabin frame (sha256 of the blob {digest})"))
                        break
    return findings


def sweep(frame_index: dict[str, set[str]], cloud_has: Callable[[str], bool], versioned: dict[str, set[str]]) -> list[Finding]:
    """Every frame digest against the cloud object store and every branch of the dataset versioning backend."""
    out = []
    for vehicle, digests in sorted(frame_index.items()):
        for d in sorted(digests):
            if cloud_has(d):
                out.append(Finding("cloud_store", "-", "object store", f"cabin frame sha256:{d} of {vehicle} is in the cloud object store"))
            for branch, held in versioned.items():
                if d in held:
                    out.append(Finding("versioning", "-", f"branch {branch}", f"cabin frame sha256:{d} of {vehicle} is versioned"))
    return out
