"""loom: labeling."""
