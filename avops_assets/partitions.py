"""Partitions: one per vehicle cohort, added at run time from the fleet registry and the landing zone."""

import dagster as dg

COHORTS = "cohorts"
cohort_partitions = dg.DynamicPartitionsDefinition(name=COHORTS)

LINES = "lines"
line_partitions = dg.DynamicPartitionsDefinition(name=LINES)  # manufacturing lines, from config/lines.yaml
