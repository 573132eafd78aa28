"""Byte sizes as people write them in policies (`40MiB`, `1TB`, `16G`, `131072`), and durations as Slurm prints
them (`2-12:00:00`)."""

from __future__ import annotations

import math

import re

KIB = 1024
MIB = 1024**2
GIB = 1024**3
TIB = 1024**4

# Decimal units are SI; single letters follow Slurm and most HPC tools (binary).
_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15,
    "kib": KIB, "mib": MIB, "gib": GIB, "tib": TIB, "pib": 1024**5,
    "k": KIB, "m": MIB, "g": GIB, "t": TIB, "p": 1024**5,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: object) -> int:
    """Return a size in bytes; raise ValueError with a message fit for a user."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 40MiB, 1TB or a number of bytes, got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must not be negative, got {value}")
        return value
    if isinstance(value, float):
        raise ValueError("expected a whole number of bytes or a size with a unit such as 1.5GiB")
    if not isinstance(value, str):
        raise ValueError(f"expected a size such as 40MiB, 1TB or a number of bytes, got {type(value).__name__}")
    if value.strip().startswith("-"):
        raise ValueError(f"size must not be negative, got {value!r}")
    match = _SIZE_RE.match(value)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(
            f"not a size: {value!r} (use bytes or a unit: KiB MiB GiB TiB PiB, KB MB GB TB PB, or K M G T P = binary)"
        )
    number, unit = match.groups()
    total = float(number) * _UNITS[unit.lower()]
    if total != int(total):
        raise ValueError(f"{value!r} is not a whole number of bytes")
    return int(total)


def format_duration(seconds: float | None) -> str:
    """A duration as Slurm prints elapsed and limit times: HH:MM:SS, with days in front past 24 h (`2-12:00:00`),
    never wrapping; rounded to the second, negative counts as 0; `--:--:--` when unknown (None, NaN, infinite).
    Every ETA and elapsed time in fs3g uses it."""
    if seconds is None or not math.isfinite(seconds):
        return "--:--:--"
    total = max(0, round(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock


def format_size(size_bytes: int) -> str:
    """Short binary form for messages: 1.25 GiB."""
    value = float(size_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.2f}".rstrip("0").rstrip(".") + f" {unit}"
        value /= 1024
    raise AssertionError("unreachable")
