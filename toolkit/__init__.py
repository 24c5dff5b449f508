"""loom: toolkit."""
