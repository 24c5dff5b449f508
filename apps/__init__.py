"""loom: apps."""
