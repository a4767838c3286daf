"""Occupant monitoring: federated rounds with Flower + Opacus, the privacy audit and budget, slice gates."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from avops.home import layout
from avops.occupant import cabin, federated, pipeline as pl, privacy
from avops.occupant.config import load_occupant_config
from avops.registry import ModelRegistry
from avops.store import open_store

COHORT = "orin-my2024-eu"


def _home(tmp_path, config, exclude=None, fault: dict | None = None):
    home = layout(tmp_path)
    cabin.simulate_cohort(home.vehicles, home.cabin_consented, config, COHORT, exclude=exclude)
    for vehicle, kind in (fault or {}).items():
        (home.vehicles / COHORT / vehicle / pl.FAULT_FILE).write_text(kind)
    pl.ingest_consented(home, config, COHORT)
    pl.train_studio(home, config, COHORT)
    return home


def _slice(table, attribute, value):
    return float(table[(table["attribute"] == attribute) & (table["value"] == value)]["accuracy"].iloc[0])


@pytest.fixture(scope="module")
def config():
    return load_occupant_config()


@pytest.fixture(scope="module")
def one_round(tmp_path_factory, config):
    home = _home(tmp_path_factory.mktemp("occ"), config)
    store = open_store(home)
    res = pl.run_federated_round(home, config, COHORT, "r001")
    return home, store, res


def test_simulated_fleet_is_non_iid_and_stays_in_the_vehicles(config, one_round):
    home, store, _ = one_round
    mixes = []
    for v in cabin.fleet_vehicles(config, COHORT):
        _, labels, _ = cabin.read_frames(home.vehicles / COHORT / v / "cabin" / cabin.FRAMES_FILE, config)
        mixes.append(labels["state"].value_counts(normalize=True).reindex(config.states, fill_value=0).to_numpy())
    spread = np.ptp(np.stack(mixes), axis=0)
    assert spread.max() > 0.15, f"vehicles' state mixes are nearly identical: {spread}"
    index, _ = pl.frame_index(home, config, COHORT)
    assert sum(len(d) for d in index.values()) == config.simulator.vehicles_per_cohort * config.simulator.frames_per_vehicle
    assert not any(store.has(d) for ds in index.values() for d in ds)


def test_a_round_improves_the_global_model_on_held_out_vehicles(config, one_round):
    home, store, res = one_round
    body = res.manifest.body
    assert len(body["participants"]) == config.simulator.vehicles_per_cohort and not body["dropped"]
    frames, labels, _ = pl.load_consented(home, COHORT, "eval", store)
    studio = pl.datasets.current(store, home.refs, pl.STUDIO_KEY, COHORT)
    before = pl.evaluate(pl.net.arrays_from_bytes(store.get_bytes(studio.body["weights_sha256"])), frames, labels, config)
    after = pl.evaluate(pl.net.arrays_from_bytes(store.get_bytes(body["global_sha256"])), frames, labels, config)
    # the studio had no sunglasses: the fleet's frames (which never left the cars) teach them
    assert _slice(after, "eyewear", "sunglasses") >= _slice(before, "eyewear", "sunglasses") + 0.10
    worst = lambda t: t[t["attribute"] != "all"]["accuracy"].min()  # noqa: E731
    assert worst(after) >= worst(before) + 0.10  # the worst slice (what the gates judge) improves
    assert _slice(after, "all", "all") >= _slice(before, "all", "all") - 0.02  # at little cost overall (DP noise, one round)
    # every update is on record by digest, and the global model is what the cloud stored
    assert set(body["update_digests"]) == set(body["participants"])
    assert store.has(body["global_sha256"]) and store.has(body["uplink_log_sha256"])


@pytest.mark.parametrize("sigma,q,steps", [(1.0, 0.1, 20), (0.8, 0.1, 60), (1.5, 0.25, 30)])
def test_cloud_accountant_matches_opacus_for_the_same_parameters(sigma, q, steps):
    from opacus.accountants import RDPAccountant

    delta = 1e-5
    acc = RDPAccountant()
    acc.history = [(sigma, q, steps)]
    independent = acc.get_epsilon(delta)
    ours = privacy.cloud_epsilon([privacy.Release(sigma, q, steps, population=int(round(64 / q)))], delta)
    assert ours == pytest.approx(independent, rel=0.03)
    # and below the classical RDP bound without amplification (q = 1): a sanity floor for both
    classical = min(steps * a / (2 * sigma**2) + math.log(1 / delta) / (a - 1) for a in np.linspace(1.1, 200, 4000))
    assert ours < classical


def test_each_vehicles_reported_budget_is_reproduced_by_the_cloud(config, one_round):
    _, _, res = one_round
    assert not res.budget_findings
    for v, b in res.budget.items():
        assert b["reported"] == pytest.approx(b["recomputed"], rel=privacy.EPSILON_TOLERANCE), v
        assert 0 < b["recomputed"] <= config.federated.dp.max_epsilon
    assert res.manifest.body["epsilon_max"] == pytest.approx(max(b["recomputed"] for b in res.budget.values()))


def test_a_vehicle_over_budget_declines_and_the_check_names_it():
    assert privacy.budget_findings({"v1": {"reported": 3.0, "recomputed": 3.01}}, 10.0) == []
    assert "exceeds" in privacy.budget_findings({"v1": {"reported": 11.0, "recomputed": 11.0}}, 10.0)[0]
    assert "more than the cloud" in privacy.budget_findings({"v1": {"reported": 6.0, "recomputed": 4.0}}, 10.0)[0]


def test_the_audit_passes_a_clean_round_and_rechecks_from_the_cloud(config, one_round):
    home, store, res = one_round
    assert res.audit["passed"], res.audit["findings"]
    again = pl.verify_round(home, config, COHORT, res.manifest, store)
    assert again["passed"] and again["frames_checked"] > 0 and again["uplinked_items"] > 0


def test_planted_leak_is_caught_and_blocks_the_round(tmp_path, config):
    leaker = cabin.fleet_vehicles(config, COHORT)[3]
    home = _home(tmp_path, config, fault={leaker: "leak_frame"})
    res = pl.run_federated_round(home, config, COHORT, "r001")
    assert not res.audit["passed"]
    kinds = {f["kind"] for f in res.audit["findings"]}
    assert {"frame", "unexpected_record", "cloud_store"} <= kinds
    leaked_by = {f["vehicle"] for f in res.audit["findings"] if f["kind"] == "frame"}
    enrolled = {v.root.name: v.pseudonym for v in pl.enrolled(home, config, COHORT)}
    assert leaked_by == {enrolled[leaker]}
    with pytest.raises(federated.RoundFailed, match="failed its privacy audit"):
        pl.run_federated_round(home, config, COHORT, "r002")
    with pytest.raises(federated.RoundFailed, match="not promoted"):
        pl.promote(home, ModelRegistry.local(home), config, COHORT, "test")


def test_audit_finds_a_frame_hidden_inside_a_larger_blob_and_in_versioning(tmp_path, config):
    store = open_store(layout(tmp_path))
    frame = np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)
    fb = frame.tobytes()
    digest = cabin.frame_digests(frame[None])[0]
    blob_digest = store.put_bytes(b"\x00" * 100 + fb + b"\x01" * 50)
    schema = pl.net.schema(len(config.states))
    uplink = [{"pseudonym": "p1", "records": {"arrays": {"kind": "arrays", "items": {
        "head.weight": {"sha256": blob_digest, "dtype": "float32", "shape": [999]}}}}}]
    found = privacy.audit_uplink(uplink, schema, {"p1": {digest}}, [fb], store.get_bytes)
    assert {f.kind for f in found} == {"unexpected_array", "embedded_frame"}
    swept = privacy.sweep({"p1": {digest}}, store.has, {"main": {digest}})
    assert [f.kind for f in swept] == ["versioning"]


def test_dropped_and_slow_vehicles_do_not_stall_the_round(tmp_path, config):
    vs = cabin.fleet_vehicles(config, COHORT)
    home = _home(tmp_path, config, fault={vs[0]: "drop", vs[1]: "slow"})
    res = pl.run_federated_round(home, config, COHORT, "r001", timeout_s=8)
    body = res.manifest.body
    pseud = {v.root.name: v.pseudonym for v in pl.enrolled(home, config, COHORT)}
    assert set(body["dropped"]) == {pseud[vs[0]], pseud[vs[1]]}
    assert "VehicleOffline" in body["dropped"][pseud[vs[0]]] and "no reply" in body["dropped"][pseud[vs[1]]]
    assert len(body["participants"]) == len(vs) - 2 and res.audit["passed"]
    # the cloud counts the dropped vehicles' possible spending in the next round: never less than they report
    res2 = pl.run_federated_round(home, config, COHORT, "r002", timeout_s=8)
    assert not res2.budget_findings, res2.budget_findings


def test_too_few_participants_fail_the_round_with_a_clear_error(tmp_path, config):
    small = dataclasses.replace(config, federated=dataclasses.replace(config.federated, min_participants=8))
    vs = cabin.fleet_vehicles(config, COHORT)
    home = _home(tmp_path, small, fault={vs[0]: "drop"})
    with pytest.raises(federated.RoundFailed, match="7 updates arrived, at least 8"):
        pl.run_federated_round(home, small, COHORT, "r001")


def test_slice_gates_block_a_model_trained_without_sunglasses(tmp_path, config, one_round):
    home = _home(tmp_path, config, exclude={"eyewear": {"sunglasses"}})
    pl.run_federated_round(home, config, COHORT, "r001")
    r = pl.promote(home, ModelRegistry.local(home), config, COHORT, "test")
    by_gate = {g["gate"]: g for g in r.gates}
    sunglasses = by_gate["eyewear=sunglasses"]
    # the model never saw sunglasses: that slice is below its floor, or it is the worst slice and opens a gap the
    # fairness gate refuses; either way a gate that names sunglasses blocks the release
    assert sunglasses["blocks"] or (by_gate["fairness_gap"]["blocks"] and by_gate["fairness_gap"]["worst"] == "eyewear=sunglasses"), r.gates
    home1, store1, with_sunglasses = one_round  # the same round over the same vehicles, sunglasses in their frames
    table = pl.evaluate(pl.net.arrays_from_bytes(store1.get_bytes(with_sunglasses.manifest.body["global_sha256"])),
                        *pl.load_consented(home1, COHORT, "eval", store1)[:2], config)
    assert _slice(table, "eyewear", "sunglasses") >= sunglasses["value"] + 0.03
    assert r.version.stage == "blocked" and pl.production(ModelRegistry.local(home), COHORT) is None


def test_slice_gates_require_evidence_for_every_slice(config):
    import pandas as pd

    rows = [{"attribute": "all", "value": "all", "frames": 500, "accuracy": 0.9}]
    rows += [{"attribute": a, "value": v, "frames": 100, "accuracy": 0.9} for a, vs in config.slices.items() for v in vs]
    rows += [{"attribute": "state", "value": s, "frames": 100, "accuracy": 0.9} for s in config.states]
    gates = pl.slice_gates(pd.DataFrame(rows), config)
    assert not any(g["blocks"] for g in gates)
    rows[-1]["frames"] = 3
    gates = pl.slice_gates(pd.DataFrame(rows), config)
    assert [g["gate"] for g in gates if g["blocks"]] == [f"state={config.states[-1]}"]


def test_bad_consented_session_is_quarantined_and_the_rest_go_on(tmp_path, config):
    home = layout(tmp_path)
    cabin.simulate_cohort(home.vehicles, home.cabin_consented, config, COHORT)
    bad = home.cabin_consented / COHORT / "broken.npz"
    bad.write_bytes(b"not a zip")
    m, q = pl.ingest_consented(home, config, COHORT)
    assert [x.file for x in q] == [str(bad)] and "unreadable" in q[0].reason
    assert not bad.exists() and (home.quarantine / "cabin_consented" / COHORT / "broken.npz").exists()
    assert m.body["splits"]["eval"] == config.simulator.eval_vehicles * config.simulator.eval_frames_per_vehicle


def test_federated_rounds_in_dagster_block_on_a_planted_leak(tmp_path, monkeypatch, config):
    """Through Dagster: consented sessions and studio model, round r001 (checks pass, ε in the metadata),
    the gated model; then a vehicle's software leaks a frame in r002: the blocking check fails and r003 refuses."""
    import dagster as dg

    from avops_assets.definitions import defs
    from avops_assets.defs.occupant.assets import CONSENTED, DMS_MODEL, ROUNDS, STUDIO
    from avops_assets.jobs import FEDERATED_ROUND_JOB, OCCUPANT_JOB
    from avops_assets.partitions import COHORTS

    home = layout(tmp_path / "home")
    cabin.simulate_cohort(home.vehicles, home.cabin_consented, config, COHORT)
    monkeypatch.setenv("AVOPS_HOME", str(home.root))
    monkeypatch.delenv("AVOPS_REGISTRY_URL", raising=False)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(COHORTS, [COHORT])
    d = defs()
    cohort_job, round_job = d.resolve_job_def(OCCUPANT_JOB), d.resolve_job_def(FEDERATED_ROUND_JOB)

    def run(job, key, assets, ok=True):
        r = job.execute_in_process(partition_key=key, instance=instance, asset_selection=assets, raise_on_error=False)
        assert r.success == ok, [e.message for e in r.all_events if e.is_failure]
        return r

    run(cohort_job, COHORT, [CONSENTED, STUDIO])
    r1 = run(round_job, dg.MultiPartitionKey({"cohort": COHORT, "round": "r001"}), [ROUNDS])
    checks = {c.check_name: c for c in r1.get_asset_check_evaluations()}
    assert checks["no_cabin_data_uploaded"].passed and checks["privacy_budget_within_limit"].passed
    meta = r1.get_asset_materialization_events()[0].materialization.metadata
    assert 0 < meta["epsilon_spent_max"].value <= config.federated.dp.max_epsilon
    assert len(meta["participants"].value) == config.simulator.vehicles_per_cohort and "r001" in meta["privacy_budget"].value
    r = run(cohort_job, COHORT, [DMS_MODEL])
    gate = {c.check_name: c for c in r.get_asset_check_evaluations()}["occupant_slice_gates"]
    stage = r.get_asset_materialization_events()[0].materialization.metadata["stage"].value
    assert gate.passed == (stage == "released")
    # the model's lineage back through its round to the studio model, every node verified against the store and
    # matched to the Dagster materialization of its own partition (the round: cohort|r001)
    from avops.lineage import Lineage, Node, _Checker, _federated_inputs
    from avops_assets.lineage_cli import cross_check, dagster_records, round_partitions

    registry = ModelRegistry.local(home)
    mv = registry.get(pl.MODEL, int(r.get_asset_materialization_events()[0].materialization.metadata["version"].value))
    lin = Lineage()
    lin.add(Node("model", "model", "driver monitoring"))
    _federated_inputs(lin, _Checker(home, registry, None), "model", mv.lineage, COHORT)
    assert round_partitions(lin) == {f"{COHORT}|r001"} and {n.kind for n in lin.nodes.values()} >= {"federated round", "studio model", "model update"}
    cross_check(lin, dagster_records(instance, COHORT, rounds=round_partitions(lin)), COHORT)
    assert not lin.problems, lin.problems
    assert {n.detail["dagster"]["partition"] for n in lin.nodes.values() if n.kind in ("federated round", "studio model")} == {f"{COHORT}|r001", COHORT}

    (home.vehicles / COHORT / cabin.fleet_vehicles(config, COHORT)[2] / pl.FAULT_FILE).write_text("leak_frame")
    r2 = run(round_job, dg.MultiPartitionKey({"cohort": COHORT, "round": "r002"}), [ROUNDS], ok=False)  # a blocking check failed
    leak = {c.check_name: c for c in r2.get_asset_check_evaluations()}["no_cabin_data_uploaded"]
    assert not leak.passed and "frame" in leak.description and leak.severity == dg.AssetCheckSeverity.ERROR
    r3 = run(round_job, dg.MultiPartitionKey({"cohort": COHORT, "round": "r003"}), [ROUNDS], ok=False)
    assert any("failed its privacy audit" in str(e.event_specific_data) for e in r3.all_events if e.is_step_failure)


def test_dossier_sections_show_budget_no_upload_proof_and_protocol_slices(config, one_round):
    from avops.compliance.html import _occupant_html
    from avops.occupant.evidence import occupant_sections

    home, _, r1 = one_round  # continues the module's federation: r001 ran, no model was promoted yet
    registry = ModelRegistry.local(home)
    assert occupant_sections(home, registry, config, COHORT) == (None, None)
    r2 = pl.run_federated_round(home, config, COHORT, "r002")
    pl.promote(home, registry, config, COHORT, "test")
    mon, priv = occupant_sections(home, registry, config, COHORT)
    assert [r["round"] for r in priv["rounds"]] == ["r001", "r002"]
    assert priv["rounds"][1]["epsilon_max"] == pytest.approx(r2.manifest.body["epsilon_max"])
    assert r2.manifest.body["epsilon_max"] > r1.manifest.body["epsilon_max"]
    assert all(r["no_upload_audit"] == "passed" and r["frames_checked"] > 0 for r in priv["rounds"])
    assert priv["budget"]["delta"] == config.federated.dp.delta
    assert {s["value"] for s in mon["protocol_slices"]["eyewear (occlusion)"]} == set(config.slices["eyewear"])
    assert {s["value"] for s in mon["protocol_slices"]["distraction and drowsiness"]} == set(config.states)
    html = "\n".join(_occupant_html({"occupant_monitoring": mon, "occupant_privacy": priv}))
    assert "<svg" in html and "privacy budget" in html and "GDPR Art. 35" in html


def _secure(config):
    return dataclasses.replace(config, federated=dataclasses.replace(config.federated, secure_aggregation=True))


def test_secure_aggregation_gives_the_same_model_while_the_cloud_sees_only_masked_updates(tmp_path, config, one_round):
    """SecAgg+ (Flower): the vehicles' updates travel masked; the unmasked sum is the plain round's FedAvg."""
    secure = _secure(config)
    home = _home(tmp_path, secure)
    res = pl.run_federated_round(home, secure, COHORT, "r001")
    body, store = res.manifest.body, open_store(home)
    assert body["secure_aggregation"] and len(body["participants"]) == secure.simulator.vehicles_per_cohort and res.audit["passed"]
    uplink = store.get_json(body["uplink_log_sha256"])
    assert not any(rec["items"] for e in uplink for name, rec in e["records"].items() if rec["kind"] == "arrays"), \
        "no weights in the clear"
    masked = [k for e in uplink for k in e["records"].get(privacy.SECAGG_RECORD, {}).get("items", {}) if k.startswith("masked_params")]
    assert len(masked) == len(body["participants"]) * (1 + len(pl.net.schema(len(config.states))))  # the weight, then each array
    # the same vehicles, seeds and DP noise as the plain round: the aggregate matches up to SecAgg+'s quantisation
    _, store1, plain = one_round
    a = pl.net.arrays_from_bytes(store.get_bytes(body["global_sha256"]))
    b = pl.net.arrays_from_bytes(store1.get_bytes(plain.manifest.body["global_sha256"]))
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-3
    # and every vehicle's update digest is of its masked vector, none of a clear update of the plain round
    clear = {d for v in plain.manifest.body["update_digests"].values() for d in store1.get_json(v).values()}
    secure_digests = {d for v in body["update_digests"].values() for d in store.get_json(v).values()}
    assert secure_digests and not secure_digests & clear


def test_secure_aggregation_survives_a_dropout_and_still_catches_a_leak(tmp_path, config):
    secure = _secure(config)
    vs = cabin.fleet_vehicles(config, COHORT)
    home = _home(tmp_path, secure, fault={vs[0]: "drop", vs[1]: "leak_frame"})
    res = pl.run_federated_round(home, secure, COHORT, "r001")
    pseud = {v.root.name: v.pseudonym for v in pl.enrolled(home, secure, COHORT)}
    body = res.manifest.body
    assert pseud[vs[0]] in body["dropped"] and len(body["participants"]) == len(vs) - 1
    kinds = {(f["kind"], f["vehicle"]) for f in res.audit["findings"]}
    assert ("frame", pseud[vs[1]]) in kinds and not res.audit["passed"]
    with pytest.raises(federated.RoundFailed, match="failed its privacy audit"):
        pl.run_federated_round(home, secure, COHORT, "r002")
