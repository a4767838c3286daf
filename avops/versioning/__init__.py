"""Dataset versioning: one contract, an embedded backend and a lakeFS backend."""
