"""The occupant monitoring section of a cohort's dossier: privacy budget, no-upload proof, slice metrics.

Read from what the rounds and the registry recorded (digests included), so an auditor can follow
every number back to a stored object; what only a person can assess stays an open item.
"""

from __future__ import annotations

from avops.home import HomeLayout
from avops.occupant import pipeline
from avops.occupant.config import OccupantConfig
from avops.occupant.privacy import ALLOWED_METRICS
from avops.store import open_store

# what assessment protocols (Euro NCAP driver state monitoring, NHTSA distraction guidance) vary
PROTOCOL_SLICES = {"distraction and drowsiness": "state", "eyewear (occlusion)": "eyewear", "face covering (occlusion)": "face_covering",
                   "illumination": "illumination", "age band": "age_band", "seating position": "seating"}


def occupant_sections(home: HomeLayout, registry, config: OccupantConfig, cohort: str) -> tuple[dict | None, dict | None]:
    """(``occupant_monitoring``, ``occupant_privacy``) sections, or (None, None) when no occupant model exists for the cohort."""
    versions = registry.list(pipeline.MODEL, cohort=cohort)
    if not versions:
        return None, None
    store = open_store(home)
    prod = pipeline.production(registry, cohort)
    mv = prod or max(versions, key=lambda v: v.version)
    evidence = store.get_json(mv.lineage["evidence_sha256"])
    slices = evidence["slices"]
    by_protocol = {label: [s for s in slices if s["attribute"] == attr] for label, attr in PROTOCOL_SLICES.items()}
    rounds = []
    for rnd, digest in sorted(mv.lineage.get("rounds", {}).items()):
        b = store.get_json(digest)
        rounds.append({"round": rnd, "manifest_sha256": digest, "participants": len(b["participants"]), "dropped": len(b["dropped"]),
                       "epsilon_max": b["epsilon_max"], "delta": b["dp"]["delta"], "noise_multiplier": b["dp"]["noise_multiplier"],
                       "clipping_norm": b["dp"]["max_grad_norm"], "no_upload_audit": "passed" if b["audit"]["passed"] else "FAILED",
                       "findings": len(b["audit"]["findings"]), "frames_checked": b["audit"].get("frames_checked"),
                       "secure_aggregation": "SecAgg+" if b.get("secure_aggregation") else "no",
                       "uplink_log_sha256": b["uplink_log_sha256"], "global_sha256": b["global_sha256"]})
    last = rounds[-1] if rounds else {}
    monitoring = {
        "model": {"name": mv.name, "version": mv.version, "stage": mv.stage, "checkpoint_sha256": mv.artifact_sha256,
                  "round": evidence.get("round"), "evidence_sha256": mv.lineage["evidence_sha256"]},
        "evaluation_pool": {"manifest_sha256": evidence["eval_manifest"], "test_vehicles": evidence.get("eval_vehicles", []),
                            "consent": "test-vehicle programme (consented); fleet vehicles' frames are never evaluated in the cloud"},
        "slices": slices, "protocol_slices": by_protocol, "gates": evidence["gates"],
        "verdict": "passed" if not any(g["blocks"] for g in evidence["gates"]) else
                   "FAILED: " + ", ".join(g["gate"] for g in evidence["gates"] if g["blocks"]),
        "open_for_a_person": [
            "Euro NCAP DSM: warning strategy and detection latency on the real vehicle (protocol test runs)",
            "representativeness of the consenting test pool for the markets the cohort is sold in",
        ],
    }
    privacy = {
        "design": "cabin frames stay in the vehicle; each vehicle trains locally with DP-SGD (per-frame clipping + Gaussian noise, "
                  "Opacus) and uploads model weights and five scalars; the cloud aggregates with Flower"
                  + ("; under SecAgg+ the weights travel masked and the cloud learns only their sum"
                     if any(r["secure_aggregation"] != "no" for r in rounds) else ""),
        "what_leaves_the_vehicle": ["model weights of the agreed schema (float32, by name and shape; masked under SecAgg+)",
                                    ", ".join(sorted(ALLOWED_METRICS))],
        "budget": {"epsilon_max": last.get("epsilon_max"), "delta": last.get("delta"), "max_epsilon": config.federated.dp.max_epsilon,
                   "unit": "record-level (one cabin frame) differential privacy, per vehicle, composed over all rounds",
                   "accountants": "vehicle: Opacus RDP; cloud: Flower/dp-accounting RDP (must agree)"},
        "rounds": rounds,
        "no_upload_proof": "every round's uplink log, the cloud object store and every branch of the dataset versioning backend "
                           "were searched for each fleet frame (sha256, and embedded bytes); findings per round above",
        "open_for_a_person": ["data protection impact assessment (GDPR Art. 35)", "legal basis and driver information (GDPR Art. 6, 13)"],
    }
    return monitoring, privacy


def slices_for_dossier(section: dict) -> list[tuple[str, float, float | None, bool]]:
    """(name, accuracy, floor, passed) rows for the dossier's bar chart."""
    gates = {g["gate"]: g for g in section["gates"]}
    rows = []
    for s in section["slices"]:
        name = "overall" if s["attribute"] == "all" else f"{s['attribute']}={s['value']}"
        g = gates.get(name)
        rows.append((name, s["accuracy"], g["threshold"] if g else None, not (g and g["blocks"])))
    return rows


