"""The data engine: auto-labeling, selection, review, curated sets and collection campaigns."""
