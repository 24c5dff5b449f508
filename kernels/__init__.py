"""loom: kernels."""
