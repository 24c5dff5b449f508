"""Streamlit entry point: `streamlit run apps/app/main.py -- WORKSPACE` (or `loom app WORKSPACE`)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from apps.app.shell import main  # noqa: E402

main()
