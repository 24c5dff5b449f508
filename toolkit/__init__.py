"""loom: toolkit."""

import toolkit.forks  # noqa: F401  (the fork hook, before any fork: toolkit/forks.py)
