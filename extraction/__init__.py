"""loom: extraction."""
