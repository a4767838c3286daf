"""Signed OTA metadata (Uptane on python-tuf): keys, an image repository and per-cohort director repositories."""
