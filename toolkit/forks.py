"""Whether this process is a fork of one that imported loom.

GNU OpenMP's thread pool does not survive fork: a parallel region in a forked child of a
process that already ran one never returns. Code that starts OpenMP regions itself (e.g.
`linking.chargrams` through sparse_dot_topn) runs them on one thread in such a child. The
hook is registered when `toolkit` is imported, so it sees every fork after that, whichever
loom module the child goes on to import.
"""

from __future__ import annotations

import os

_forked = False


def _mark_forked() -> None:
    global _forked
    _forked = True


os.register_at_fork(after_in_child=_mark_forked)


def forked_child() -> bool:
    """True in a process forked (without exec) after `toolkit` was imported."""
    return _forked
