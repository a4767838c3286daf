"""Staged canary rollouts gated on signed, post-boot ECU version reports."""
