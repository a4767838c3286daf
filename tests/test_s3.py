"""The object store, tables and refs on a real S3-compatible server (moto's server mode on 127.0.0.1).

Not a mock of our own calls: boto3 and pyarrow speak HTTP to a server process; the tests stop
and restart its front door to see what an outage does mid-run.
"""

import json
import shutil

import dagster as dg
import pyarrow as pa
import pytest

from avops import datasets
from avops.home import HomeLayout
from avops.query import connect_manifest
from avops.s3store import ObjectStoreUnavailable, S3ObjectStore
from avops.store import IntegrityError, ObjectStore, open_store


def test_objects_are_written_once_verified_on_read_and_cached(s3, tmp_path):
    store = S3ObjectStore(s3.url("objects-a"), tmp_path / "cache")
    digest = store.put_bytes(b"engine bytes")
    key = store.key(digest)
    assert s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read() == b"engine bytes"
    assert store.put_bytes(b"engine bytes") == digest, "a second writer of the same content finds it there (412) and moves on"
    with pytest.raises(Exception, match="PreconditionFailed|412"):  # the server enforces create-only writes
        s3.client.put_object(Bucket=s3.bucket, Key=key, Body=b"other", IfNoneMatch="*")

    fresh = S3ObjectStore(s3.url("objects-a"), tmp_path / "other-cache")  # another machine: nothing cached
    assert fresh.has(digest) and not fresh.has("0" * 64)
    assert fresh.get_bytes(digest) == b"engine bytes" and fresh.path(digest).read_bytes() == b"engine bytes"

    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=b"tampered")  # someone overwrites it without the condition
    assert not fresh.verify(digest), "verify hashes what the bucket holds now"
    with pytest.raises(IntegrityError, match="changed in the bucket"):
        S3ObjectStore(s3.url("objects-a"), tmp_path / "third-cache").path(digest)
    with pytest.raises(FileNotFoundError, match="no such object"):
        fresh.path("1" * 64)


def test_published_tables_and_refs_live_in_the_bucket_and_duckdb_reads_them_through_arrow(s3, tmp_path):
    a = S3ObjectStore(s3.url("tables"), tmp_path / "a")
    table = pa.table({"vehicle_id": ["v1", "v2", "v3"], "km": [10.5, 20.0, 30.25]})
    m = datasets.publish(a, tmp_path / "refs-a", "features/telemetry", "c1", {"rows": table}, {"note": "s3"})
    assert not (tmp_path / "refs-a").exists(), "refs go to the bucket, not to a local folder"
    ref = json.loads(s3.client.get_object(Bucket=s3.bucket, Key="tables/refs/features/telemetry/c1.json")["Body"].read())
    assert ref["manifest"] == m.digest

    b = S3ObjectStore(s3.url("tables"), tmp_path / "b")  # a second machine sees the same current version
    m2 = datasets.current(b, tmp_path / "refs-b", "features/telemetry", "c1")
    assert m2 is not None and m2.digest == m.digest
    assert datasets.read_table(b, m2, "rows").equals(table)
    shutil.rmtree(tmp_path / "b", ignore_errors=True)
    con = connect_manifest(b, m2)  # DuckDB over pyarrow's S3 filesystem: nothing is cached locally for it
    assert con.execute("SELECT sum(km) FROM rows").fetchone()[0] == pytest.approx(60.75)
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").rglob("*")), "DuckDB read through Arrow, not the cache"
    assert datasets.current(b, tmp_path / "refs-b", "features/telemetry", "missing") is None


def test_the_store_is_chosen_by_configuration_alone(s3, tmp_path, monkeypatch):
    home = HomeLayout(tmp_path / "home")
    monkeypatch.delenv("AVOPS_OBJECT_STORE", raising=False)
    assert type(open_store(home)) is ObjectStore
    monkeypatch.setenv("AVOPS_OBJECT_STORE", s3.url("configured"))
    store = open_store(home)
    assert isinstance(store, S3ObjectStore) and store.bucket == s3.bucket and store.prefix == "configured"
    monkeypatch.setenv("AVOPS_OBJECT_STORE", "gs://elsewhere")
    with pytest.raises(ValueError, match="expected s3://bucket"):
        open_store(home)


def test_s3_down_fails_with_a_clear_error_and_the_retry_completes(s3, tmp_path):
    store = S3ObjectStore(s3.url("outage"), tmp_path / "cache")
    s3.door.close()
    try:
        with pytest.raises(ObjectStoreUnavailable, match="unreachable while writing .*retry once it is back"):
            datasets.publish(store, tmp_path / "refs", "k", "p", {"t": pa.table({"x": [1]})}, {})
    finally:
        s3.door.open()
    assert datasets.current(store, tmp_path / "refs", "k", "p") is None, "the ref never moved: readers saw nothing half-done"
    m = datasets.publish(store, tmp_path / "refs", "k", "p", {"t": pa.table({"x": [1]})}, {})
    assert datasets.current(store, tmp_path / "refs", "k", "p").digest == m.digest


def test_an_asset_on_s3_retries_through_an_outage(s3, tiny_home, tiny_registry_path, monkeypatch):
    """ingest/raw_drives with the store on S3: the server goes away mid-run, the step fails with the reason, Dagster's
    retry policy runs it again once the server is back, and the bucket holds the tables and the ref."""
    import threading

    from avops_assets.definitions import defs
    from avops_assets.partitions import COHORTS

    monkeypatch.setenv("AVOPS_HOME", str(tiny_home.root))
    monkeypatch.setenv("AVOPS_FLEET_REGISTRY", str(tiny_registry_path))
    monkeypatch.setenv("AVOPS_OBJECT_STORE", s3.url("fleet"))
    cohort = "orin-my2024-eu"
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(COHORTS, [cohort])
    s3.door.close()
    threading.Timer(3.0, s3.door.open).start()  # back after the first attempt has failed
    job = defs().resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(partition_key=cohort, instance=instance, raise_on_error=False,
                                    asset_selection=[dg.AssetKey(["ingest", "raw_drives"])])
    assert result.success
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert retried, "the first attempt met the outage"
    assert "unreachable" in retried[0].event_specific_data.error.to_string(), "the failure says what happened"
    store = S3ObjectStore(s3.url("fleet"), tiny_home.root / "another-cache")
    ref = store.read_ref(tiny_home.refs, "ingest/raw_drives", cohort)
    body = store.get_json(ref["manifest"])
    assert body["tables"] and all(store.verify(t["sha256"]) for t in body["tables"].values()), "the bucket holds every table"


def test_the_audit_log_and_registry_export_to_the_bucket_and_verify_offline(s3, tmp_path):
    from avops.audit.log import EXPORTS_KEY, export_to_store, verify_export
    from avops.registry import ModelRegistry

    home = HomeLayout(tmp_path / "home")
    registry = ModelRegistry.local(home)
    v = registry.register("maintenance", "c1", "ab" * 32, {"feature_manifest": "cd" * 32}, {}, "test", "trained")
    registry.transition("maintenance", v.version, "validated", "test", "gates passed")
    store = S3ObjectStore(s3.url("audit"), tmp_path / "cache")
    digest, ref = export_to_store(registry, store, home.refs)
    assert ref["events"] >= 2 and s3.exists(store.key(digest))
    reader = S3ObjectStore(s3.url("audit"), tmp_path / "auditor")  # the auditor's machine: nothing local
    body = reader.get_json(reader.read_ref(home.refs, EXPORTS_KEY, "latest")["export"])
    assert verify_export(body["audit"]).ok and verify_export(body["audit"]).root_hash == ref["root_hash"]
    assert body["registry"]["history"][-1]["to_value"] == "validated" and body["registry"]["versions"][0]["stage"] == "validated"
    body["audit"]["events"][0]["entry"] = body["audit"]["events"][0]["entry"].replace("trained", "TRAINED")
    assert not verify_export(body["audit"]).ok, "a changed entry in the copy is caught"
