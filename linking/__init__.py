"""loom: linking."""
