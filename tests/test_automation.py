"""Declarative automation: a new ingest propagates down the curation graph, per cohort, past passed checks."""

import dagster as dg

from avops_assets.definitions import defs
from avops_assets.partitions import COHORTS
from tests.test_ingest import _materialize

COHORT = "orin-my2024-eu"
TEACHER = dg.AssetKey(["curation", "teacher"])


def test_every_curation_asset_has_an_automation_condition():
    graph = defs().resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        if key.path[0] == "curation":
            assert graph.get(key).automation_condition is not None, key


def test_a_checked_ingest_requests_that_cohorts_teacher_only(tiny_home, tiny_registry_path):
    d = defs()
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(COHORTS, [COHORT, "xavier-my2022-us"])
    before = dg.evaluate_automation_conditions(defs=d, instance=instance)
    assert before.get_num_requested(TEACHER) == 0, "nothing ingested yet"
    assert _materialize(tiny_home, tiny_registry_path, COHORT, instance).success
    evaluated = dg.evaluate_automation_conditions(defs=d, instance=instance, cursor=before.cursor)
    assert evaluated.get_requested_partitions(TEACHER) == {COHORT}
    assert evaluated.get_num_requested(dg.AssetKey(["curation", "curated_sets"])) == 0, "waits for its own upstream"


def test_a_component_that_passed_ships_while_another_is_blocked(tmp_path, monkeypatch):
    """The compatibility matrix (and so the package) follows any component's new engines, even when another
    component's engines are missing (perception blocked at its gates): each component holds back only itself."""
    monkeypatch.setenv("AVOPS_HOME", str(tmp_path / "home"))
    from avops_assets.definitions import resources
    from avops_assets.defs.compile.assets import COMPATIBILITY, bms_engines
    from avops_assets.defs.compile.checks import bms_engine_checks

    d = defs()
    instance = dg.DagsterInstance.ephemeral()
    cohort = "orin-my2025-cn"
    instance.add_dynamic_partitions(COHORTS, [cohort])
    before = dg.evaluate_automation_conditions(defs=d, instance=instance)
    assert before.get_num_requested(COMPATIBILITY) == 0, "no engines at all: nothing to judge"
    # no battery model here: the BMS engine set is an explicit, checked empty set (as for a cohort without one)
    r = dg.materialize([bms_engines, *bms_engine_checks], partition_key=cohort, instance=instance, resources=resources(),
                       selection=[bms_engines.key])
    assert r.success and all(c.passed for c in r.get_asset_check_evaluations())
    after = dg.evaluate_automation_conditions(defs=d, instance=instance, cursor=before.cursor)
    assert after.get_requested_partitions(COMPATIBILITY) == {cohort}  # SIL and maintenance engines are still missing
