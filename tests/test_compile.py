"""Compiled engines: ONNX export parity, INT8 calibration on its own split, parity/budget checks, TensorRT, the matrix."""

import dataclasses

import numpy as np
import pytest
import torch

from avops.compile import backends
from avops.compile import pipeline as cp
from avops.compile.export import export_onnx, opset_of, torch_raw
from avops.compile.socs import CatalogError, load_catalog
from avops.fleet_registry import load_registry
from avops.registry import ModelRegistry
from avops.store import ObjectStore
from avops.training import pipeline as tp
from avops.training.checkpoints import Detector
from avops.training.data import load_images
from tests.conftest import GOLD_COHORT as COHORT


def test_onnx_export_matches_pytorch_on_random_and_real_frames(built):
    model = built["train"].checkpoint.model
    data = export_onnx(model, 17)
    assert opset_of(data) == 17
    runner = backends.OrtEngineDetector(data)
    real = load_images(ObjectStore(built["home"].objects), list(built["data"].split("test")["object_sha256"][:16])).astype(np.float32)
    rand = np.random.default_rng(0).uniform(0, 255, (4, 96, 96, 3)).astype(np.float32)
    for x in (real, rand):
        assert np.abs(runner.raw(x) - torch_raw(model, x)).max() < 1e-3
    same = [(a.classes, np.round(a.boxes, 2).tolist()) for a in model.predict(real.astype(np.uint8))]
    assert same == [(b.classes, np.round(b.boxes, 2).tolist()) for b in runner.predict(real.astype(np.uint8))]


def test_engines_record_their_compilation_graph_and_pass_their_checks(built):
    recs = {r["precision"]: r for r in built["records"]}
    assert set(recs) == {"fp32", "int8"}
    ck = built["train"].checkpoint.digest
    store = ObjectStore(built["home"].objects)
    for r in recs.values():
        assert r["source_checkpoint_sha256"] == ck and store.verify(r["engine_sha256"]) and store.has(r["source_onnx_sha256"])
        assert r["target"]["soc"] == "x86-ecu" and r["toolchain"] == "onnxruntime" and r["deterministic"]
        assert r["budget"]["passed"] and "stand-in" in r["budget"]["measured_on"], r["budget"]
        assert r["parity"]["passed"], r["parity"]
    assert recs["fp32"]["engine_sha256"] != recs["int8"]["engine_sha256"]
    # INT8 calibration read the calibration split and nothing else
    val = built["data"].split("val")
    assert recs["int8"]["calibration_frames"] == len(val) > 0 and recs["int8"]["calibration_split"] == "val"
    assert recs["int8"]["calibration_sha256"] == cp.sha256_bytes("\n".join(sorted(val["object_sha256"])).encode())
    assert recs["fp32"]["calibration_sha256"] is None
    # deterministic toolchain: identical inputs, identical engine digests
    again = backends.build_ort_int8(store.get_bytes(recs["int8"]["source_onnx_sha256"]), "x86-ecu",
                                    load_images(store, list(val["object_sha256"])).astype(np.float32), recs["int8"]["calibration_sha256"])
    assert cp.sha256_bytes(again.data) == recs["int8"]["engine_sha256"]


def test_calibration_frames_from_a_test_drive_are_refused(built):
    data = built["data"]
    s = data.samples.copy()
    test_drive = s.loc[s["split"] == "test", "drive_id"].iloc[0]
    calib = s[(s["split"] == "val") | (s["drive_id"] == test_drive)]
    assert cp.calibration_leakage(data, calib) == [test_drive]
    assert cp.calibration_leakage(data, data.split("val")) == []


def test_an_engine_built_from_corrupted_weights_fails_parity(built):
    model = built["train"].checkpoint.model
    corrupt = Detector.from_bytes(model.to_bytes())
    with torch.no_grad():
        for name, p in corrupt.members[0].named_parameters():
            if p.ndim == 4:
                p.mul_(-1.0)  # flipped conv weights: a bit-rot or wrong-file failure, not noise
    m, records = cp.build_engines(built["home"], built["repo"], built["reg"], built["cohort"], load_catalog()["x86-ecu"],
                                  built["policy"], weights_override=corrupt.to_bytes(), measure_runs=5, key="test/corrupt")
    assert all(r["status"] == "blocked" and not r["parity"]["passed"] for r in records)
    worst = max(v["drop"] for v in records[0]["parity"]["slices"].values() if v["drop"] is not None)
    assert worst > built["policy"].engine_max_drop
    assert records[0]["source_checkpoint_sha256"] == built["train"].checkpoint.digest, "the engine still names what it claims to be"
    rows = cp.compatibility_rows(records, built["cohort"], load_catalog())
    row = rows[rows["engine_sha256"] == records[0]["engine_sha256"]].iloc[0]
    assert not row["compatible"] and "blocked" in row["reason"]
    # nothing left to ship: the parity check blocks; beside a good FP32 engine the bad one is only excluded
    assert not cp.shippable(records, "parity").passed
    good = next(r for r in built["records"] if r["precision"] == "fp32")
    mixed = cp.shippable([good, records[-1]], "parity")
    assert mixed.passed and mixed.kept == [f"fp32:{good['engine_sha256'][:12]}"] and len(mixed.excluded) == 1
    sil_cohort = dataclasses.replace(built["cohort"], soc="x86-ecu")
    both = cp.compatibility_rows([good, records[-1]], sil_cohort, load_catalog()).dropna(subset=["engine_sha256"])
    assert list(both["compatible"]) == [True, False]
    unbuildable = rows[rows["engine_sha256"].isna()].set_index("soc")["reason"]
    assert "qnn cannot run on this host" in unbuildable["snapdragon-ride"], "the matrix names targets this host cannot build"


def test_tensorrt_targets_fail_fast_with_a_clear_message(built):
    ok, why = backends.tensorrt_status()
    if ok:  # a GPU host: the real build runs (covered by the device check, not CI)
        pytest.skip("TensorRT and a GPU are available here")
    with pytest.raises(backends.ToolchainUnavailable, match="toolchain tensorrt unavailable on this host.*GPU executor"):
        cp.build_engines(built["home"], built["repo"], built["reg"], built["cohort"], load_catalog()["orin"], built["policy"])
    with pytest.raises(backends.ToolchainUnavailable, match="toolchain tensorrt unavailable"):
        backends.build_tensorrt(b"", "orin", "fp16", "10.3")
    with pytest.raises(backends.ToolchainUnavailable, match="qnn cannot run on this host"):
        cp.ensure_buildable(load_catalog()["snapdragon-ride"])


def test_the_matrix_refuses_wrong_opset_precision_soc_and_runtime(built):
    socs = load_catalog()
    ok = dict(built["records"][0], soc="rcar-v4h", status="ok", opset=17, precision="int8")
    fleet = load_registry()
    rcar = fleet.cohort("rcarv4h-my2025-eu")
    assert cp.compatibility(ok, rcar, socs)[0]
    assert cp.compatibility(dict(ok, opset=9), rcar, socs) == (False, "ONNX opset 9 outside rcar-v4h's range 11-21")
    assert "cannot execute fp16" in cp.compatibility(dict(ok, precision="fp16"), rcar, socs)[1]
    assert "built for rcar-v4h, vehicles have orin" in cp.compatibility(ok, fleet.cohort("orin-my2024-eu"), socs)[1]
    trt = dict(ok, soc="orin", toolchain="tensorrt", toolchain_version="10.3", precision="fp16")
    assert cp.compatibility(trt, fleet.cohort("orin-my2025-cn"), socs)[0]
    assert "MY2024 vehicles run TensorRT 8.6" in cp.compatibility(trt, fleet.cohort("orin-my2024-eu"), socs)[1]


def test_catalog_errors_name_the_file_and_the_soc(tmp_path):
    (tmp_path / "socs.yaml").write_text("socs:\n  foo: {precisions: [int4], toolchain: x, toolchain_versions: ['1'], opset: [11, 17], "
                                        "memory_budget_mb: 1, latency_budget_ms: 1}\n")
    with pytest.raises(CatalogError, match=r"socs.yaml: SoC 'foo' has unknown precision"):
        load_catalog(tmp_path / "socs.yaml")
    cat = load_catalog()
    assert {"orin", "xavier", "rcar-v4h", "snapdragon-ride", "x86-ecu"} <= set(cat)
    assert cat["orin"].toolchain_version(2024) == "8.6" and cat["orin"].toolchain_version(2030) == "10.3"


def test_dagster_builds_sil_engines_behind_blocking_checks_and_the_matrix(built, gold, monkeypatch):
    import dagster as dg

    from avops_assets.definitions import MAIN_JOB, defs
    from avops_assets.partitions import COHORTS

    monkeypatch.setenv("AVOPS_HOME", str(gold["home"].root))
    monkeypatch.setenv("AVOPS_SAFETY_GATES", str(gold["root"] / "gates.yaml"))
    monkeypatch.setenv("AVOPS_FLEET_REGISTRY", str(gold["registry_path"]))
    local = ModelRegistry.local(gold["home"])  # what the resource opens by default
    v = local.register("perception", COHORT, built["train"].checkpoint.digest, built["train"].version.lineage, {}, "test")
    if v.stage == "candidate":
        tp.validate(local, v.version, "0" * 64, "test")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(COHORTS, [COHORT])
    keys = [dg.AssetKey(["compile", n]) for n in ("engines", "sil_engines", "compatibility")]
    result = defs().resolve_job_def(MAIN_JOB).execute_in_process(partition_key=COHORT, instance=instance, asset_selection=keys,
                                                                 raise_on_error=False)
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert [e.step_key for e in failures] == ["compile__engines"], "only the TensorRT (orin) target fails here"
    assert "toolchain tensorrt unavailable on this host" in failures[0].event_specific_data.error.message
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"sil_engine_parity": True, "sil_engine_budget": True}
    mats = {e.asset_key.path[-1]: e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert set(mats) == {"sil_engines", "compatibility"}
    assert "compilation graph" in mats["sil_engines"]["engines"].value
    assert mats["sil_engines"]["source_checkpoint_sha256"].value == built["train"].checkpoint.digest
    matrix = mats["compatibility"]["matrix"].value
    assert "x86-ecu" in matrix and "not buildable here" in matrix and "built for x86-ecu, vehicles have orin" in matrix


def test_a_tensorrt_partition_is_routed_to_the_gpu_queue_once(gold, monkeypatch):
    import dagster as dg

    from avops_assets.definitions import MAIN_JOB, defs
    from avops_assets.partitions import COHORTS
    from sensors.gpu_routing import gpu_routing_sensor

    if backends.tensorrt_status()[0]:
        pytest.skip("TensorRT and a GPU are available here: nothing to route")
    monkeypatch.setenv("AVOPS_HOME", str(gold["home"].root))
    monkeypatch.setenv("AVOPS_FLEET_REGISTRY", str(gold["registry_path"]))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(COHORTS, [COHORT])
    job = defs().resolve_job_def(MAIN_JOB)
    failed = job.execute_in_process(partition_key=COHORT, instance=instance, asset_selection=[dg.AssetKey(["compile", "engines"])],
                                    raise_on_error=False)
    assert not failed.success

    def evaluate(result):
        ctx = dg.build_run_status_sensor_context(sensor_name="gpu_routing_sensor", dagster_event=result.get_run_failure_event(),
                                                 dagster_instance=instance, dagster_run=result.dagster_run).for_run_failure()
        return list(gpu_routing_sensor(ctx) or [])

    requests = evaluate(failed)
    assert len(requests) == 1 and requests[0].partition_key == COHORT
    assert requests[0].tags["avops/executor"] == "gpu" and "nvidia.com/gpu" in requests[0].tags["dagster-k8s/config"]
    again = job.execute_in_process(partition_key=COHORT, instance=instance, asset_selection=[dg.AssetKey(["compile", "engines"])],
                                   raise_on_error=False, tags={"avops/executor": "gpu"})
    assert evaluate(again) == [], "a failed GPU run is not routed again"
