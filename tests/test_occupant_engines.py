"""Driver-monitoring engines for the in-cabin ECU: INT8 calibrated on studio frames, parity on held-out frames, budgets, compatibility."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from avops import datasets
from avops.compile import pipeline as compile_pipeline
from avops.compile.socs import load_catalog
from avops.fleet_registry import load_registry
from avops.home import layout
from avops.occupant import cabin, engines as oe, model as net, pipeline as pl
from avops.occupant.config import load_occupant_config
from avops.registry import ModelRegistry
from avops.registry.gated import PRODUCTION
from avops.store import open_store

COHORT = "orin-my2024-eu"


@pytest.fixture(scope="module")
def config():
    c = load_occupant_config()
    # the project's studio set (the model must be trained for its decisions to have margins), few fleet and test frames
    sim = dataclasses.replace(c.simulator, vehicles_per_cohort=1, frames_per_vehicle=8, eval_vehicles=2, eval_frames_per_vehicle=250)
    return dataclasses.replace(c, simulator=sim)


@pytest.fixture(scope="module")
def world(tmp_path_factory, config):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions on a shared 2-core host: one thread is several times faster
    try:
        home = layout(tmp_path_factory.mktemp("occ_engines"))
        cabin.simulate_cohort(home.vehicles, home.cabin_consented, config, COHORT)
        pl.ingest_consented(home, config, COHORT)
        studio = pl.train_studio(home, config, COHORT)
        registry = ModelRegistry.local(home)
        v = registry.register(pl.MODEL, COHORT, studio.body["weights_sha256"], lineage={}, metrics={}, actor="test")
        registry.transition(v.name, v.version, "validated", "test", "test: gates taken as passed")
        registry.transition(v.name, v.version, "released", "test", "test")
        registry.set_alias(v.name, COHORT, PRODUCTION, v.version, "test", "test")
        cohort, socs = load_registry().cohort(COHORT), load_catalog()
        m, records = oe.build_engines(home, registry, cohort, config, socs, measure_runs=20)
        yield {"home": home, "registry": registry, "version": v, "cohort": cohort, "socs": socs, "manifest": m, "records": records}
    finally:
        torch.set_num_threads(threads)


def test_int8_and_fp32_engines_agree_with_the_checkpoint_within_the_cabin_budget(world, config):
    records, cohort, socs = world["records"], world["cohort"], world["socs"]
    by = {r["precision"]: r for r in records}
    assert set(by) == {"int8", "fp32"}
    soc_id = cohort.soc_of("cabin")
    assert soc_id == "tda4vm"
    store = open_store(world["home"])
    for precision, r in by.items():
        p, b = r["parity"], r["budget"]
        assert r["status"] == "ok", (precision, p, b)
        assert p["agreement"] >= config.parity_min_agreement and p["frames"] == 2 * 250
        assert p["checkpoint_accuracy"] > 0.6, "the studio model must have learned the states for parity to mean anything"
        assert abs(p["accuracy"] - p["checkpoint_accuracy"]) <= 0.03
        assert b["passed"] and b["peak_memory_mb"] <= socs[soc_id].memory_budget_mb
        assert b["latency_ms_target_estimate"] <= socs[soc_id].latency_budget_ms
        assert r["component"] == pl.MODEL and r["soc"] == soc_id and r["ecus"][0]["name"] == "cabin"
        assert r["ecus"][0]["hardware_id"] == cohort.ecu("cabin").hardware_id
        assert r["source_checkpoint_sha256"] == world["version"].artifact_sha256 and r["model_version"] == world["version"].version
        assert store.has(r["engine_sha256"]) and store.has(r["source_onnx_sha256"])
        assert socs[soc_id].opset[0] <= r["opset"] <= socs[soc_id].opset[1]
        ok, why = compile_pipeline.compatibility(r, cohort, socs)
        assert ok, why
    import onnx

    ops = {n.op_type for n in onnx.load_from_string(store.get_bytes(by["int8"]["engine_sha256"])).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # really quantized
    # calibrated on studio frames only, never on the held-out test vehicles that judge it
    assert by["int8"]["calibration_split"] == "studio" and 0 < by["int8"]["calibration_frames"] <= oe.CALIBRATION_FRAMES
    assert store.has(by["int8"]["calibration_sha256"]) and by["fp32"]["calibration_sha256"] is None
    # published where compatibility and packaging read every component's engines
    engines = compile_pipeline.all_engines(world["home"], [COHORT])
    assert {e["engine_sha256"] for e in engines} >= {r["engine_sha256"] for r in records}
    rows = compile_pipeline.compatibility_rows(engines, cohort, socs)
    assert rows[rows["component"] == pl.MODEL]["compatible"].all()
    # another cabin SoC (or none) rules the engine out
    other = dataclasses.replace(cohort, id="no-cabin", ecus=tuple(e for e in cohort.ecus if e.name != "cabin"))
    assert compile_pipeline.compatibility(by["int8"], other, socs) == (False, "no-cabin vehicles have no cabin ECU")


def test_the_onnx_export_matches_pytorch(world, config):
    store = open_store(world["home"])
    weights = net.arrays_from_bytes(store.get_bytes(world["version"].artifact_sha256))
    onnx_bytes = store.get_bytes(world["records"][0]["source_onnx_sha256"])
    frames, _, _ = pl.load_consented(world["home"], COHORT, "eval", store)
    m = net.DriverStateNet(len(config.states))
    net.set_arrays(m, weights)
    with torch.no_grad():
        ref = m.eval()(net.to_tensor(frames[:64])).numpy()
    out = oe.run(onnx_bytes, frames[:64])  # also checks the input/output names and the dynamic batch
    np.testing.assert_allclose(out, ref, atol=1e-4)


def test_an_engine_of_other_weights_fails_parity_and_is_not_compatible(world, config):
    fresh = net.arrays_bytes(net.get_arrays(net.new_model(len(config.states), seed=12345)))
    m, records = oe.build_engines(world["home"], world["registry"], world["cohort"], config, world["socs"], measure_runs=5,
                                  weights_override=fresh)
    try:
        for r in records:
            # the records still name the registered checkpoint: parity against it is what catches the swap
            assert r["source_checkpoint_sha256"] == world["version"].artifact_sha256
            assert not r["parity"]["passed"] and r["parity"]["agreement"] < config.parity_min_agreement, r["parity"]
            assert r["status"] == "blocked"
            ok, why = compile_pipeline.compatibility(r, world["cohort"], world["socs"])
            assert not ok and "parity" in why
        assert not compile_pipeline.shippable(records, "parity").passed
    finally:  # the good engines are the current ones again for any later test (same tables and body: same manifest)
        store, good = open_store(world["home"]), world["manifest"]
        again = datasets.publish(store, world["home"].refs, compile_pipeline.DMS_ENGINES, COHORT,
                                 {"engines": datasets.read_table(store, good, "engines")},
                                 {k: v for k, v in good.body.items() if k not in ("asset", "partition", "tables")})
        assert again.digest == good.digest


def test_no_production_model_or_no_cabin_ecu_means_nothing_to_ship(world, config, tmp_path):
    empty = ModelRegistry(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(oe.NothingToShip, match=f"{COHORT} has no production occupant_monitoring model"):
        oe.build_engines(world["home"], empty, world["cohort"], config, world["socs"])
    no_cabin = dataclasses.replace(world["cohort"], ecus=tuple(e for e in world["cohort"].ecus if e.name != "cabin"))
    with pytest.raises(oe.NothingToShip, match="no 'cabin' ECU"):
        oe.build_engines(world["home"], world["registry"], no_cabin, config, world["socs"])
    home = layout(tmp_path / "skipped")
    m = oe.publish_skipped(home, world["cohort"], "no production model")
    assert (m.body["engines"], m.body["skipped"]) == ([], "no production model")
    assert datasets.current(open_store(home), home.refs, compile_pipeline.DMS_ENGINES, COHORT).digest == m.digest
    assert compile_pipeline.all_engines(home, [COHORT]) == []


def test_dms_engines_in_dagster_behind_blocking_checks(world):
    """The asset builds the cohort's engines (checks pass) and publishes an explicit, checked empty set for a
    cohort with no production driver-monitoring model."""
    import dagster as dg

    from avops_assets.defs.compile.assets import dms_engines
    from avops_assets.defs.compile.checks import dms_engine_checks
    from avops_assets.partitions import COHORTS
    from resources import AvopsHome, FleetRegistryResource, ModelRegistryResource

    home = world["home"]
    res = {"avops_home": AvopsHome(root=str(home.root)), "model_registry": ModelRegistryResource(home=str(home.root)),
           "fleet": FleetRegistryResource()}
    instance = dg.DagsterInstance.ephemeral()
    other = "rcarv4h-my2025-eu"
    instance.add_dynamic_partitions(COHORTS, [COHORT, other])
    r = dg.materialize([dms_engines, *dms_engine_checks], partition_key=COHORT, instance=instance, resources=res)
    assert r.success
    checks = {c.check_name: c.passed for c in r.get_asset_check_evaluations()}
    assert checks == {"dms_engine_parity": True, "dms_engine_budget": True}
    meta = r.asset_materializations_for_node("compile__dms_engines")[0].metadata
    assert meta["ecu"].value == "cabin" and meta["soc"].value == "tda4vm"
    assert "| int8 |" in meta["engines"].value and "| fp32 |" in meta["engines"].value
    r = dg.materialize([dms_engines, *dms_engine_checks], partition_key=other, instance=instance, resources=res)
    assert r.success and all(c.passed for c in r.get_asset_check_evaluations())
    meta = r.asset_materializations_for_node("compile__dms_engines")[0].metadata
    assert "no production occupant_monitoring model" in meta["skipped"].value
