import dagster as dg

from avops_assets.definitions import MAIN_JOB, defs
from avops_assets.partitions import BATTERY_FLEETS, COHORTS, LINES


def test_definitions_load_and_describe_every_asset():
    d = defs()
    graph = d.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    assert dg.AssetKey(["ingest", "raw_drives"]) in keys
    for key in keys:
        node = graph.get(key)
        assert node.description and len(node.description) > 40, f"{key} needs a description"
        assert node.group_name == key.path[0], f"{key}: group must be its stage"
        if key.path[0] == "battery" or key.path[-1].startswith("battery_"):  # battery fleets, or cell chemistries
            pd = node.partitions_def
            assert (isinstance(pd, dg.DynamicPartitionsDefinition) and pd.name == BATTERY_FLEETS) or (
                isinstance(pd, dg.StaticPartitionsDefinition) and set(pd.get_partition_keys()) == {"nmc", "lfp"}), key
            continue
        if key.path[0] == "federated":  # one partition per (cohort, round): each round is evidence of its own
            pd = node.partitions_def
            assert isinstance(pd, dg.MultiPartitionsDefinition), key
            assert {d.name for d in pd.partitions_defs} == {"cohort", "round"}, key
            assert pd.get_partitions_def_for_dimension("cohort").name == COHORTS, key
            continue
        assert isinstance(node.partitions_def, dg.DynamicPartitionsDefinition)
        assert node.partitions_def.name == (LINES if key.path[0] == "manufacturing" else COHORTS)
    checks = {k.name for k in graph.asset_check_keys}
    assert {"stored_tables_match_digests", "tables_match_pandera_schemas", "can_signals_within_dbc_ranges"} <= checks
    assert d.resolve_job_def(MAIN_JOB) is not None
    assert d.resolve_sensor_def("landing_zone_sensor") is not None
    assert d.resolve_sensor_def("avops_automation") is not None
    for name in ("drift_sensor", "line_change_sensor", "fp_rate_sensor", "bms_landing_sensor", "battery_drift_sensor"):
        assert d.resolve_sensor_def(name) is not None
    assert d.resolve_schedule_def("maintenance_retrain_schedule") is not None
    main = {k.path[0] for k in d.resolve_job_def(MAIN_JOB).asset_layer.executable_asset_keys}
    assert "manufacturing" not in main and {"features", "maintenance"} <= main, "lines are their own partitions and job"
    main_keys = {k.to_user_string() for k in d.resolve_job_def(MAIN_JOB).asset_layer.executable_asset_keys}
    assert not {k for k in main_keys if k.split("/")[0] in ("occupant", "federated")}, "rounds run in their own job"
    assert d.resolve_job_def("occupant_cohort") is not None and d.resolve_job_def("federated_round") is not None
    assert "compile/bms_engines" in main_keys and not {k for k in main_keys if "battery" in k.split("/")[0] or "/battery_" in k}


def test_blocking_checks_are_blocking():
    graph = defs().resolve_asset_graph()
    blocking = {k.name for k in graph.asset_check_keys if graph.get_check_spec(k).blocking}
    assert {"stored_tables_match_digests", "tables_match_pandera_schemas"} <= blocking
    assert "can_signals_within_dbc_ranges" not in blocking
