import pytest

from fs3g_hpc.model.sizes import GIB, KIB, MIB, TIB, format_duration, format_size, parse_size


@pytest.mark.parametrize("text,expected", [
    ("40MiB", 40 * MIB), ("1TB", 10**12), ("131072", 131072), (131072, 131072), ("16G", 16 * GIB),
    ("1.5GiB", 3 * GIB // 2), ("128 KiB", 128 * KIB), ("2tib", 2 * TIB), ("0", 0), ("7b", 7),
])
def test_parse_size_accepts_units(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad,fragment", [
    ("-1", "negative"), (-5, "negative"), ("40 furlongs", "not a size"), ("MiB", "not a size"), (True, "boolean"),
    (1.5, "whole number"), ("1.3B", "whole number"), ([1], "expected a size"),
])
def test_parse_size_rejects(bad, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_size(bad)


def test_format_size():
    assert format_size(40 * MIB) == "40 MiB"
    assert format_size(1536 * MIB) == "1.5 GiB"
    assert format_size(12) == "12 B"


@pytest.mark.parametrize("seconds, expected", [
    (0, "00:00:00"), (59, "00:00:59"), (59.6, "00:01:00"), (3599, "00:59:59"), (86399, "23:59:59"),
    (24 * 3600, "1-00:00:00"), (60 * 3600, "2-12:00:00"), (60 * 3600 + 62, "2-12:01:02"),
    (400 * 86400, "400-00:00:00"), (-5, "00:00:00"),
    (None, "--:--:--"), (float("inf"), "--:--:--"), (float("nan"), "--:--:--"),
])
def test_format_duration_shows_days_as_slurm_does_and_never_wraps(seconds, expected):
    assert format_duration(seconds) == expected
