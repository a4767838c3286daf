"""Drift of fleet telemetry against what the production model was trained on."""
