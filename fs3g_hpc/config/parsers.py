"""Value parsers of the policy schema: each takes the YAML value and returns the typed value or raises ValueError
with a user-facing message. Pure: nothing here touches S3 or Slurm."""

from __future__ import annotations

import difflib
import ipaddress
import posixpath
import re
from enum import Enum
from typing import Any, Callable, Sequence

from ..model.sizes import format_size, parse_size

Parser = Callable[[Any], Any]


def type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", bool: "a boolean", int: "an integer", float: "a number",
            str: "a string", type(None): "nothing (null)"}.get(type(value), type(value).__name__)


def integer(minimum: int | None = None, maximum: int | None = None) -> Parser:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {type_name(value)}")
        if minimum is not None and value < minimum:
            raise ValueError(f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ValueError(f"must be <= {maximum}, got {value}")
        return value

    return parse


def size(minimum: int = 0, maximum: int | None = None) -> Parser:
    def parse(value: Any) -> int:
        n = parse_size(value)
        if n < minimum:
            raise ValueError(f"must be at least {format_size(minimum)}, got {format_size(n)}")
        if maximum is not None and n > maximum:
            raise ValueError(f"must be at most {format_size(maximum)}, got {format_size(n)}")
        return n

    return parse


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {type_name(value)}")
    return value


def string(pattern: str | None = None, what: str = "", max_bytes: int | None = None) -> Parser:
    regex = re.compile(pattern) if pattern else None

    def parse(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {type_name(value)}")
        if not value:
            raise ValueError("must not be empty")
        if regex and not regex.fullmatch(value):
            raise ValueError(f"{value!r} is not {what}")
        if max_bytes is not None and len(value.encode()) > max_bytes:
            raise ValueError(f"must be at most {max_bytes} bytes")
        return value

    return parse


def choice(enum: type[Enum], allowed: Sequence[Enum] | None = None) -> Parser:
    members = list(allowed or enum)

    def parse(value: Any) -> Enum:
        names = ", ".join(str(m.value) for m in members)
        if not isinstance(value, str):
            raise ValueError(f"expected one of {names}, got {type_name(value)}")
        for member in members:
            if value == member.value:
                return member
        for member in members:
            if value.lower() == str(member.value).lower():
                raise ValueError(f"{value!r}: write it as {member.value!r}")
        if any(value == m.value for m in enum):
            raise ValueError(f"{value!r} is not allowed here; use one of {names}")
        close = difflib.get_close_matches(value, [str(m.value) for m in members], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"{value!r} is not one of {names}{hint}")

    return parse


def optional(parser: Parser) -> Parser:
    def parse(value: Any) -> Any:
        return None if value is None else parser(value)

    return parse


def string_list(item: Parser) -> Parser:
    def parse(value: Any) -> tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {type_name(value)}")
        out = []
        for i, v in enumerate(value):
            try:
                out.append(item(v))
            except ValueError as e:
                raise ValueError(f"item {i}: {e}") from e
        return tuple(out)

    return parse


_SLURM_UNSAFE = re.compile(r"[\s'\"\\%`$]")


def absolute_path(slurm_safe: bool = False) -> Parser:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise ValueError(f"expected an absolute path, got {type_name(value)}")
        if not value.startswith("/"):
            raise ValueError(f"{value!r} is not an absolute path")
        if "\0" in value:
            raise ValueError("path contains a NUL byte")
        if slurm_safe and _SLURM_UNSAFE.search(value):
            # Slurm expands % in log paths and splits #SBATCH lines on blanks.
            raise ValueError(f"{value!r}: a path used in Slurm job scripts must not contain blanks, quotes, $ or %")
        normal = posixpath.normpath(value)
        return "/" if normal == "//" else normal

    return parse


def parse_bucket(value: Any) -> str:
    """S3's general-purpose bucket naming rules."""
    name = string()(value)
    if not 3 <= len(name) <= 63:
        raise ValueError(f"bucket name {name!r} must be 3 to 63 characters long")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]*[a-z0-9]", name):
        raise ValueError(
            f"bucket name {name!r} may hold only lowercase letters, digits, dots and hyphens, "
            "and must begin and end with a letter or digit"
        )
    if ".." in name:
        raise ValueError(f"bucket name {name!r} must not contain two adjacent dots")
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        pass
    else:
        raise ValueError(f"bucket name {name!r} must not be formatted as an IP address")
    for prefix in ("xn--", "sthree-", "amzn-s3-demo-"):
        if name.startswith(prefix):
            raise ValueError(f"bucket name {name!r} must not begin with {prefix!r}")
    for suffix in ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"):
        if name.endswith(suffix):
            raise ValueError(f"bucket name {name!r} must not end with {suffix!r}")
    return name


def parse_prefix(value: Any) -> str:
    """A key prefix; stored without leading or trailing '/' so that keys never get an empty `//` segment."""
    if value is None or value == "":
        return ""
    text = string()(value).strip("/")
    if not text:
        return ""
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError("key prefix must not contain control characters")
    for segment in text.split("/"):
        if segment in ("", ".", ".."):
            raise ValueError(f"key prefix {value!r} has an empty, '.' or '..' segment")
    if len(text.encode()) > 256:
        raise ValueError("key prefix must be at most 256 bytes (S3 keys are limited to 1024)")
    return text


def parse_glob(value: Any) -> str:
    """An exclude pattern: checked here so that a malformed one fails at load, not in the middle of a walk."""
    from ..model import globs

    return globs.check(string()(value))


def parse_endpoint_url(value: Any) -> str:
    url = string()(value)
    match = re.fullmatch(r"(https?)://([^/?#]+)(/[^?#]*)?", url)
    if not match:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    if "@" in match.group(2):
        raise ValueError("credentials do not belong in a policy: remove the user:password part of the URL")
    return url.rstrip("/")


def parse_slurm_time(value: Any) -> str:
    """Slurm's --time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S, or UNLIMITED."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"must be at least 1 minute, got {value}")
        return str(value)
    text = string()(value)
    if text.upper() in ("UNLIMITED", "INFINITE"):
        return "UNLIMITED"
    if not re.fullmatch(r"\d+(:\d{1,2}){0,2}|\d+-\d{1,2}(:\d{1,2}){0,2}", text):
        raise ValueError(f"{text!r} is not a Slurm time (e.g. 90, 12:00:00, 2-00:00:00)")
    return text


SLURM_TOKEN = string(r"[A-Za-z0-9_.,+-]+", "a Slurm name (letters, digits, _ . , + -)")
# Options fs3g sets itself on every job it renders; a policy may not override them.
MANAGED_SBATCH_OPTIONS = {
    "--array": "-a", "--dependency": "-d", "--output": "-o", "--error": "-e", "--job-name": "-J",
    "--parsable": None, "--wrap": None, "--signal": None, "--requeue": None, "--no-requeue": None,
    "--begin": "-b", "--chdir": "-D", "--partition": "-p", "--account": "-A", "--qos": "-q", "--time": "-t",
    "--cpus-per-task": "-c", "--mem": None, "--mem-per-cpu": None, "--export": None, "--wait": "-W",
    "--open-mode": None,
}
_SHORT_TO_LONG = {short: long for long, short in MANAGED_SBATCH_OPTIONS.items() if short}


def parse_sbatch_option(value: Any) -> str:
    text = string()(value)
    match = re.fullmatch(r"(--[a-z][a-z0-9-]*|-[a-zA-Z])(=[^\s'\"\\`$]+)?", text)
    if not match:
        raise ValueError(f"{text!r} is not one sbatch option written as --name or --name=value (no blanks or quotes)")
    name = match.group(1)
    long_name = _SHORT_TO_LONG.get(name, name)
    if long_name in MANAGED_SBATCH_OPTIONS:
        raise ValueError(f"{text!r}: fs3g sets {long_name} itself; use the slurm.* settings instead")
    return text



def parse_schedule(value: Any) -> str:
    from ..schedule import Schedule, ScheduleError

    try:
        return Schedule.parse(string()(value)).text
    except ScheduleError as e:
        raise ValueError(str(e)) from e



def parse_duration(value: Any) -> Any:
    """A retention duration such as 30d, 12w, 6m, 1y or 1y6m (restic's form, plus weeks): a model Duration."""
    from ..model.retention import Duration

    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as 30d, 12w or 6m, got {type_name(value)}")
    return Duration.parse(value)


def fraction(value: Any) -> float:
    """A number from 0 to 1 inclusive."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a fraction from 0 to 1, got {type_name(value)}")
    if not 0 <= value <= 1:
        raise ValueError(f"must be from 0 to 1, got {value}")
    return float(value)
