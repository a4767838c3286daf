import json

import can
import cantools
import dagster as dg
import numpy as np
import pytest

from avops import datasets
from avops.can.dbc import load_dbc
from avops.can.frames import CanFrames
from avops.can.logs import write_can_log
from avops.ingest.ingest import ASSET_KEY, ingest_partition
from avops.store import ObjectStore, sha256_file
from avops_assets.defs.ingest import checks as ingest_checks
from avops_assets.defs.ingest.assets import raw_drives
from avops_assets.partitions import COHORTS
from resources import AvopsHome, FleetRegistryResource


def _materialize(home, registry_path, cohort, instance=None):
    instance = instance or dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(COHORTS, [cohort])
    return dg.materialize(
        [raw_drives, ingest_checks.stored_tables_match_digests, ingest_checks.tables_match_pandera_schemas,
         ingest_checks.can_signals_within_dbc_ranges],
        partition_key=cohort,
        instance=instance,
        resources={"avops_home": AvopsHome(root=str(home.root)), "fleet": FleetRegistryResource(path=str(registry_path))},
    )


@pytest.mark.parametrize("cohort", ["orin-my2024-eu", "xavier-my2022-us"])
def test_materialize_raw_drives_on_ephemeral_instance(tiny_home, tiny_registry_path, cohort):
    landed = {str(p.relative_to(tiny_home.landing)): sha256_file(p) for p in (tiny_home.landing / cohort).rglob("*") if p.is_file()}
    result = _materialize(tiny_home, tiny_registry_path, cohort)
    assert result.success
    evals = result.get_asset_check_evaluations()
    assert len(evals) == 3 and all(e.passed for e in evals)
    md = result.get_asset_materialization_events()[0].materialization.metadata
    recorded = {i["file"]: i["sha256"] for i in md["input_sha256"].value}
    assert recorded == landed, "every input file's sha256 is recorded"
    m = datasets.current(ObjectStore(tiny_home.objects), tiny_home.refs, ASSET_KEY, cohort)
    assert m.digest == md["manifest_sha256"].value
    assert any(n.startswith("can__") for n in m.tables)
    drives = datasets.read_table(ObjectStore(tiny_home.objects), m, "drives").to_pandas()
    assert sorted(drives["source_sha256"]) == sorted(landed.values())
    if cohort == "orin-my2024-eu":
        cams = datasets.read_table(ObjectStore(tiny_home.objects), m, "camera_frames").to_pandas()
        assert len(cams) > 0 and set(cams["illumination"]) <= {"day", "dusk", "night"}
        store = ObjectStore(tiny_home.objects)
        assert all(store.verify(d) for d in cams["object_sha256"])


def test_decoded_can_equals_cantools_for_every_frame_of_a_sample(tiny_home, tiny_registry):
    cohort = tiny_registry.cohort("orin-my2024-eu")
    blf = next((tiny_home.landing / cohort.id).rglob("*.blf"))
    result = ingest_partition(tiny_home, cohort)
    store = ObjectStore(tiny_home.objects)
    db = cantools.database.load_file(str(load_dbc(cohort.dbc_spec) and __import__("avops.can.dbc", fromlist=["x"]).dbc_path(cohort.dbc_spec)), strict=False)
    frames = list(can.BLFReader(str(blf)))[:400]
    tables = {}
    checked = 0
    for msg in frames:
        dbmsg = db.get_message_by_frame_id(msg.arbitration_id)
        name = f"can__{dbmsg.name}"
        if name not in tables:
            t = datasets.read_table(store, result.manifest, name).to_pandas()
            tables[name] = t[t["drive_id"] == blf.stem].reset_index(drop=True)
        t = tables[name]
        row = t.iloc[int(np.argmin(np.abs(t["timestamp"].to_numpy() - msg.timestamp)))]
        assert abs(row["timestamp"] - msg.timestamp) < 1e-5
        expected = dbmsg.decode(bytes(msg.data), decode_choices=False)
        for sig, value in expected.items():
            assert row[sig] == pytest.approx(value, rel=1e-9, abs=1e-9), (dbmsg.name, sig)
            checked += 1
    assert checked > 1000


def _bad_files(home, cohort_id, db):
    vdir = home.landing / cohort_id / f"{cohort_id}-v000"
    good_mcap = next(vdir.glob("*.mcap"))
    data = good_mcap.read_bytes()
    (vdir / "truncated_drive.mcap").write_bytes(data[: len(data) // 2])
    (vdir / "random_bytes.mcap").write_bytes(np.random.default_rng(0).bytes(4096))
    (vdir / "empty_drive.blf").write_bytes(b"")
    known = {m.frame_id for m in db.messages}
    unknown_id = next(i for i in range(0x700, 0x7FF) if i not in known)
    n = 50
    frames = CanFrames(
        timestamp=1.77e9 + np.arange(n) * 0.01,
        frame_id=np.array([unknown_id if i % 5 == 0 else db.get_message_by_name("ESP_21").frame_id for i in range(n)], np.uint32),
        is_extended=np.zeros(n, bool),
        dlc=np.full(n, 8, np.uint8),
        data=np.zeros((n, 8), np.uint8),
        channel=np.zeros(n, np.uint8),
    )
    write_can_log(vdir / "unknown_ids.asc", frames)
    return {"truncated_drive.mcap": "truncated", "random_bytes.mcap": "not_the_declared_format",
            "empty_drive.blf": "empty", "unknown_ids.asc": "unknown_can_ids"}


def test_bad_files_are_quarantined_and_the_rest_ingested(tiny_home, tiny_registry):
    cohort = tiny_registry.cohort("orin-my2024-eu")
    good = sorted(p.name for p in (tiny_home.landing / cohort.id).rglob("*") if p.is_file())
    expected = _bad_files(tiny_home, cohort.id, load_dbc(cohort.dbc_spec))
    result = ingest_partition(tiny_home, cohort)
    got = {q.original.split("/")[-1]: q.reason for q in result.quarantined}
    assert got == expected
    for name, reason in expected.items():
        moved = next(tiny_home.quarantine.rglob(name))
        record = json.loads(moved.with_name(name + ".reason.json").read_text())
        assert record["reason"] == reason and record["sha256"] == sha256_file(moved)
        assert name in record["file"] and record["detail"] is not None
        assert not list(tiny_home.landing.rglob(name)), "quarantined files leave the landing zone"
    assert sorted(i["file"].split("/")[-1] for i in result.inputs) == good
    assert len(result.manifest.body["quarantined"]) == 4
    unknown = next(q for q in result.quarantined if q.reason == "unknown_can_ids")
    assert "10 frames" in unknown.detail


def test_second_ingest_reuses_per_file_results(tiny_home, tiny_registry):
    cohort = tiny_registry.cohort("xavier-my2022-us")
    first = ingest_partition(tiny_home, cohort)
    second = ingest_partition(tiny_home, cohort)
    assert first.ingested == len(first.inputs) and second.reused == len(second.inputs)
    assert first.manifest.tables == second.manifest.tables


def test_unchanged_files_are_not_rehashed_but_changed_ones_are(tiny_home, tiny_registry, monkeypatch):
    import avops.ingest.ingest as ingest_mod

    cohort = tiny_registry.cohort("xavier-my2022-us")
    first = ingest_partition(tiny_home, cohort)
    calls = []
    real = ingest_mod.sha256_file
    monkeypatch.setattr(ingest_mod, "sha256_file", lambda p: calls.append(p) or real(p))
    second = ingest_partition(tiny_home, cohort)
    assert calls == [] and second.manifest.tables == first.manifest.tables
    asc = next((tiny_home.landing / cohort.id).rglob("*.asc"))
    asc.write_text(asc.read_text().replace("End TriggerBlock", "End TriggerBlock\n"))
    third = ingest_partition(tiny_home, cohort)
    assert calls == [asc]
    changed = next(i for i in third.inputs if i["file"].endswith(asc.name))
    assert changed["sha256"] == real(asc) != next(i for i in first.inputs if i["file"].endswith(asc.name))["sha256"]
