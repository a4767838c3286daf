"""The production profile: Dagster's config schema accepts it, and the graph runs on a real Postgres instance."""

import os
import shutil

import dagster as dg
import psycopg
import yaml
from dagster._config import process_config

from avops_assets.partitions import COHORTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_USER": "avops", "DAGSTER_PG_PASSWORD": "secret",
       "DAGSTER_PG_DB": "dagster", "AVOPS_S3_BUCKET": "avops-artifacts", "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
       "AVOPS_ECS_TASK_DEFINITION": "arn:aws:ecs:eu-central-1:123456789012:task-definition/avops:7"}


def test_production_profile_validates_against_dagsters_config_schemas(tmp_path, monkeypatch):
    from dagster._core.instance.config import dagster_instance_config
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_aws.ecs import EcsRunLauncher
    from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
    from dagster_k8s import K8sRunLauncher
    from dagster_postgres import PostgresEventLogStorage

    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    shutil.copy(os.path.join(ROOT, "deploy/dagster.production.yaml"), tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["storage"]["postgres"]["postgres_db"]["hostname"] == {"env": "DAGSTER_PG_HOST"}
    assert config["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    checks = {
        "run_launcher (k8s)": (K8sRunLauncher, config["run_launcher"]["config"]),
        "run_coordinator": (QueuedRunCoordinator, config["run_coordinator"]["config"]),
        "compute_logs": (S3ComputeLogManager, config["compute_logs"]["config"]),
        "postgres storage": (PostgresEventLogStorage, config["storage"]["postgres"]),
        "run_launcher (ECS)": (EcsRunLauncher, yaml.safe_load(open(os.path.join(ROOT, "deploy/run_launcher.ecs.yaml")))["run_launcher"]["config"]),
    }
    for name, (cls, cfg) in checks.items():
        result = process_config(cls.config_type(), cfg)
        assert result.success, f"{name}: {[e.message for e in result.errors]}"
    # and a typo is caught, so the test can fail
    bad = dict(config["run_launcher"]["config"], job_namespce="avops")
    assert not process_config(K8sRunLauncher.config_type(), bad).success


def test_the_graph_runs_on_a_postgres_instance_with_the_multiprocess_executor(postgres_url, tiny_home, tiny_registry_path,
                                                                              tmp_path, monkeypatch):
    from avops_assets.definitions import resolved_main_job
    from avops_assets.jobs import PRELOAD

    with psycopg.connect(postgres_url, autocommit=True) as con:
        con.execute("DROP DATABASE IF EXISTS dagster_instance")
        con.execute("CREATE DATABASE dagster_instance")
    url = postgres_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://") + "/dagster_instance"
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump({"telemetry": {"enabled": False}, "storage": {"postgres": {"postgres_url": url}}}))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("AVOPS_HOME", str(tiny_home.root))
    monkeypatch.setenv("AVOPS_FLEET_REGISTRY", str(tiny_registry_path))
    cohort = "orin-my2024-eu"
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(COHORTS, [cohort])
        result = dg.execute_job(dg.reconstructable(resolved_main_job), instance=instance,
                                asset_selection=[dg.AssetKey(["ingest", "raw_drives"])], tags={"dagster/partition": cohort},
                                run_config={"execution": {"config": {"multiprocess": {
                                    "max_concurrent": 2, "start_method": {"forkserver": {"preload_modules": PRELOAD}}}}}})
        assert result.success
        run_id = result.run_id
        assert instance.get_run_by_id(run_id).is_success
    with psycopg.connect(url.replace("+psycopg2", "")) as con:
        kinds = {k: n for k, n in con.execute(
            "SELECT dagster_event_type, count(*) FROM event_logs WHERE run_id = %s GROUP BY 1", (run_id,)).fetchall()}
        assert kinds.get("ASSET_MATERIALIZATION") == 1 and kinds.get("ASSET_CHECK_EVALUATION") == 3, kinds
        assert con.execute("SELECT count(*) FROM runs WHERE run_id = %s", (run_id,)).fetchone()[0] == 1
