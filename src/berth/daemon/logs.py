"""Container logs in Docker's json-file format: sizes for rotation options, and reading
with tail/since/until/timestamps/follow (the shim writes them)."""

from __future__ import annotations

from berth.errors import InvalidArgument

_UNITS = {"b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3}


def parse_size(text: str) -> int:
    """Docker's log-opt sizes: ``10m`` is 10,000,000 bytes (decimal units, as docker's units.FromHumanSize)."""
    raw = text.strip().lower()
    digits = raw.rstrip("kmgb")
    unit = raw[len(digits):] or "b"
    try:
        return int(float(digits) * _UNITS[unit])
    except (ValueError, KeyError):
        raise InvalidArgument(f"invalid size: {text!r}") from None
