"""loom: extraction. Turn a folder of semi-structured documents into a table (EVAPORATE).

from extraction import Evaporate
result = Evaporate().run("docs/", mode="code+")
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Evaporate",
    "EvaporateConfig",
    "ExtractionResult",
    "load_folder",
    "Sandbox",
    "check_code",
]


def __getattr__(name: str) -> Any:  # lazy: sandbox workers import this package and stay light
    if name in ("Evaporate", "ExtractionResult"):
        from extraction import evaporate

        return getattr(evaporate, name)
    if name == "EvaporateConfig":
        from extraction.config import EvaporateConfig

        return EvaporateConfig
    if name == "load_folder":
        from extraction.documents import load_folder

        return load_folder
    if name in ("Sandbox", "check_code"):
        from extraction import sandbox

        return getattr(sandbox, name)
    raise AttributeError(name)
