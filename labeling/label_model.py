"""Old home of the label models, kept so `from labeling.label_model import X` still works.

The code lives in the `labeling.model` package (checks, base, one module per model).
"""

from __future__ import annotations

from labeling.model import *  # noqa: F403 (every public name of labeling.model)
from labeling.model import __all__  # noqa: F401
