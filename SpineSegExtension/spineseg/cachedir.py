"""Where SpineSeg keeps what outlives a run: ``$SPINESEG_CACHE`` if set, else ``$XDG_CACHE_HOME/spineseg``
(``~/.cache/spineseg``)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["user_cache_folder"]


def user_cache_folder() -> Path:
    """The user's SpineSeg cache folder (not created here)."""
    root = os.environ.get("SPINESEG_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "spineseg"
