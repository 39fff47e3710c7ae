"""Reading label values as written in tables (strings, numbers, booleans)."""

from __future__ import annotations

from typing import Any


def as_float(v: Any) -> float | None:
    """``v`` as a number, or None when it is not one (booleans are not numbers here)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            return None
    return None
