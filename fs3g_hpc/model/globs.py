"""Shell-style globs translated to regular expressions over path bytes, for the policy's `exclude` patterns.

What a pattern may hold (as in a POSIX shell with bash's globstar):

- `*` any run of bytes but `/`; `?` one character but `/` (one UTF-8 sequence, or one byte of a name that is not
  UTF-8); `**` any run of whole directories: `**/x` is x at any depth, `a/**` is a and everything under it,
  `a/**/b` is b anywhere under a;
- `[abc]`, `[a-z]`, `[!x]` or `[^x]` (not x), `[[:digit:]]` and the other POSIX classes (ASCII): one character of the
  set, never `/`. A `]` first in the set is literal (`[]x]`), so is a `-` first or last. Ranges must be between two
  ASCII characters and ascending;
- `\\c` is the character c itself (`\\*`, `\\[`);
- a `[` without a closing `]` is a literal `[`, as the shell treats it.

Names need not be UTF-8: the pattern is encoded with os.fsencode and matched against the raw bytes. Pure: no I/O;
each pattern is translated once, when the matcher is built.
"""

from __future__ import annotations

import os
import re

# One character: a whole UTF-8 sequence when the bytes are one, else one byte; never `/`.
_ONE_CHAR = rb"(?:[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}|[^/])"

_POSIX_CLASSES = {
    "alnum": rb"0-9A-Za-z", "alpha": rb"A-Za-z", "blank": rb" \t", "cntrl": rb"\x00-\x1f\x7f",
    "digit": rb"0-9", "graph": rb"!-~", "lower": rb"a-z", "print": rb" -~",
    "punct": rb"!-/:-@\[-`{-~", "space": rb" \t\n\r\f\v", "upper": rb"A-Z", "xdigit": rb"0-9A-Fa-f",
}


class GlobError(ValueError):
    """A pattern that cannot mean anything: an empty or descending range, an unknown [:class:]."""


def _byte_class(chars: str) -> bytes:
    return b"".join(re.escape(bytes([ord(c)])) for c in chars)


def _translate_class(body: str) -> tuple[bytes, bool]:
    """The regex of one bracket expression's body (between `[` and `]`); whether it is negated."""
    negate = body[:1] in ("!", "^")
    if negate:
        body = body[1:]
    ascii_parts: list[bytes] = []
    wide: list[bytes] = []  # characters outside ASCII: alternatives of whole UTF-8 sequences
    i = 0
    while i < len(body):
        c = body[i]
        if c == "[" and body.startswith("[:", i):
            end = body.find(":]", i + 2)
            if end < 0:
                raise GlobError(f"unclosed POSIX class in [{body}]")
            name = body[i + 2:end]
            if name not in _POSIX_CLASSES:
                raise GlobError(f"unknown class [:{name}:]; known: {', '.join(sorted(_POSIX_CLASSES))}")
            ascii_parts.append(_POSIX_CLASSES[name])
            i = end + 2
            continue
        if i + 2 < len(body) and body[i + 1] == "-":
            low, high = c, body[i + 2]
            if ord(low) > 127 or ord(high) > 127:
                raise GlobError(f"range {low}-{high}: ranges must be between ASCII characters")
            if low > high:
                raise GlobError(f"range {low}-{high} is empty (it descends)")
            ascii_parts.append(_byte_class(low) + b"-" + _byte_class(high))
            i += 3
            continue
        if ord(c) > 127:
            wide.append(re.escape(os.fsencode(c)))
        else:
            ascii_parts.append(_byte_class(c))
        i += 1
    members = [b"[" + b"".join(ascii_parts) + b"]"] if ascii_parts else []
    members += wide
    return b"|".join(members), negate


def translate(pattern: str) -> bytes:
    """The regex (bytes, anchored at the end; use with .match) of one glob; GlobError if it is malformed."""
    out: list[bytes] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                at_start = i == 0 or pattern[i - 1] == "/"
                if at_start and pattern.startswith("**/", i):  # zero or more whole directories
                    out.append(rb"(?:[^/]*/)*")
                    i += 3
                    continue
                if at_start and i + 2 == n and i > 0:  # trailing `/**`: the directory itself and all under it,
                    out[-1] = rb"(?:/.*)?"  # so the walk prunes it instead of entering it to exclude each entry
                    i += 2
                    continue
                out.append(rb".*")
                i += 2
                continue
            out.append(rb"[^/]*")
        elif c == "?":
            out.append(_ONE_CHAR)
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(os.fsencode(pattern[i])))
        elif c == "[":
            # The closing `]`: not the first character of the set (after an optional ! or ^), and not inside [:x:].
            j = i + 1
            if j < n and pattern[j] in "!^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                if pattern.startswith("[:", j):
                    end = pattern.find(":]", j + 2)
                    j = end + 2 if end >= 0 else j + 1
                else:
                    j += 1
            if j >= n:  # unclosed: a literal `[`, as in the shell
                out.append(re.escape(b"["))
            else:
                body = pattern[i + 1:j]
                if "/" in body:  # a class never matches `/`: the shell reads this as literal text
                    out.append(re.escape(b"["))
                else:
                    members, negate = _translate_class(body)
                    if negate:
                        out.append(rb"(?!" + members + rb")" + _ONE_CHAR if members else _ONE_CHAR)
                    else:
                        out.append(rb"(?!/)(?:" + members + rb")")  # a range or [:punct:] may span `/`
                    i = j + 1
                    continue
        else:
            out.append(re.escape(os.fsencode(c)))
        i += 1
    return b"(?:" + b"".join(out) + rb")\Z"


def check(pattern: str) -> str:
    """`pattern` itself when it translates and compiles; ValueError (GlobError) saying why not."""
    try:
        re.compile(translate(pattern))
    except re.error as e:
        raise GlobError(f"{pattern!r} is not a valid glob: {e}") from e
    except GlobError as e:
        raise GlobError(f"{pattern!r}: {e}") from e
    return pattern
