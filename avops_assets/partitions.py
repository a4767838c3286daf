"""Partitions: one per vehicle cohort, added at run time from the fleet registry and the landing zone."""

import dagster as dg

COHORTS = "cohorts"
cohort_partitions = dg.DynamicPartitionsDefinition(name=COHORTS)

LINES = "lines"
line_partitions = dg.DynamicPartitionsDefinition(name=LINES)  # manufacturing lines, from config/lines.yaml

BATTERY_FLEETS = "battery_fleets"
battery_fleet_partitions = dg.DynamicPartitionsDefinition(name=BATTERY_FLEETS)  # vehicle cohorts and storage fleets with BMS logs


def chemistry_partitions() -> dg.StaticPartitionsDefinition:
    """One partition per cell chemistry of config/battery.yaml (read when the code location loads)."""
    from avops.battery.config import load_battery_config

    return dg.StaticPartitionsDefinition(sorted(load_battery_config().chemistries))


def federated_round_partitions() -> dg.MultiPartitionsDefinition:
    """Federated rounds: one partition per cohort and round (r001..r<max_rounds> of config/occupant.yaml)."""
    from avops.occupant.config import load_occupant_config

    rounds = dg.StaticPartitionsDefinition(load_occupant_config().round_keys())
    return dg.MultiPartitionsDefinition({"cohort": cohort_partitions, "round": rounds})
