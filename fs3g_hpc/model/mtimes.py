"""When two modification times are the same time: at the precision the writer of the recorded one kept.

fs3g records mtimes exactly, as integer nanoseconds (catalog records) or `SECONDS.NANOSECONDS` with 9 digits (object
metadata). The original tool wrote Python's `str(os.stat(f).st_mtime)`: a float, which at today's epoch holds about
a quarter of a microsecond (`str` keeps the shortest digits that read back as the same float). Such a time equals a
nanosecond mtime when that mtime, made a float the way Python's `os.stat` makes `st_mtime` (or by plain division),
is that same float: the only test that neither calls an untouched file changed nor lets a real change pass by more
than the float's own precision.

    mtime_matches(now_ns, recorded_ns)   a catalog record's mtime: exact, or the float-string value of now_ns
    mtime_text_matches(text, now_ns)     an object's `mtime` metadata: exact 9-digit form, or any float string

Pure functions, no I/O.
"""

from __future__ import annotations

import re

NS = 1_000_000_000
_EXACT = re.compile(r"-?[0-9]+\.[0-9]{9}")


def stat_float(ns: int) -> float:
    """`st_mtime` as CPython's os.stat computes it from (seconds, nanoseconds): `seconds + nanoseconds * 1e-9`."""
    seconds, rest = divmod(ns, NS)
    return seconds + rest * 1e-9


def float_text(ns: int) -> str:
    """What the original tool wrote for a file of this mtime: `str(st_mtime)`."""
    return str(stat_float(ns))


def float_ns(value: float) -> int:
    """A float time as nanoseconds, from its shortest decimal form (what the float string says, not its binary
    expansion): 1700000000.1234567 is 1700000000123456700."""
    text = repr(value)
    if "e" in text or "E" in text or "inf" in text or "nan" in text:
        return round(value * NS)
    sign = -1 if text.startswith("-") else 1
    whole, _, fraction = text.lstrip("-").partition(".")
    return sign * (int(whole) * NS + int((fraction + "000000000")[:9]))


def float_string_ns(ns: int) -> int:
    """The nanoseconds a catalog built from the original tool's metadata holds for a file of mtime `ns`."""
    return float_ns(stat_float(ns))


def mtime_matches(now_ns: int, recorded_ns: int) -> bool:
    """A catalog record's mtime is the file's: exactly, or as the original tool's float string recorded it."""
    if now_ns == recorded_ns:
        return True
    # A float holds ~238 ns at today's epoch: anything further apart is a change whatever the writer.
    if abs(now_ns - recorded_ns) > 1_000:
        return False
    return recorded_ns == float_string_ns(now_ns) or recorded_ns == float_ns(now_ns / NS)


def is_exact_text(text: str) -> bool:
    """fs3g's own form: `SECONDS.NANOSECONDS` with exactly nine digits."""
    return _EXACT.fullmatch(text.strip()) is not None


def text_ns(text: str) -> int:
    """The nanoseconds a recorded mtime text says (exactly for fs3g's form, at the float's digits otherwise);
    ValueError for anything that is not a number."""
    from .objectmeta import parse_ns

    try:
        return parse_ns(text)
    except ValueError:
        value = float(text)  # exponent forms: "1e-05"; ValueError for text that is no number
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"not a time: {text!r}") from None
        return float_ns(value)


def mtime_text_matches(text: str, now_ns: int) -> bool:
    """An object's `mtime` metadata says the file's mtime `now_ns`: fs3g's exact form compared exactly, a float
    string (the original tool's) compared at the float's precision. ValueError when `text` is no number."""
    recorded = text_ns(text)
    if is_exact_text(text):
        return recorded == now_ns
    try:
        value = float(text)
    except ValueError:
        return recorded == now_ns
    return recorded == now_ns or value == stat_float(now_ns) or value == now_ns / NS
