"""Compliance: multi-regime dossiers generated from one run, signed, logged, and verifiable offline."""
