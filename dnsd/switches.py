"""On/off switches read from the environment (for measurements and fallbacks)."""

from __future__ import annotations

import os

OFF = ("0", "false", "no", "off")


def switched_on(name: str) -> bool:
    """``name`` is on unless set to ``0``, ``false``, ``no`` or ``off`` (any case)."""
    return os.environ.get(name, "1").strip().lower() not in OFF
