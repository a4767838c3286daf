"""The vehicle side: an Uptane primary's full verification, and a TUF conformance client (`avops-vehicle`)."""
