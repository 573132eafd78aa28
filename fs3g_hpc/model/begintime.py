"""The times `sbatch --begin` takes, for checking `fs3g restore --at` where no cluster can be asked.

Where Slurm answers, `sbatch --test-only --begin=TIME` is the authority (slurm/commands.begin_time_accepted); this
grammar is the fallback. It follows sbatch(1) and what Slurm 22.05's parser was measured to accept:

    TIME     := [CLOCK] [DAY] | [DAY] [CLOCK] | now [{+|-} COUNT [UNIT]]      (blanks between parts are allowed)
    CLOCK    := H[H]:MM[:SS] [AM|PM] | midnight | noon | elevenses | fika | teatime
    DAY      := YYYY-MM-DD[THH:MM[:SS]] | MMDD[YY] | M[M]/D[D][/YY] | M[M].D[D][.YY] | today | tomorrow
    UNIT     := second[s] | minute[s] | hour[s] | day[s] | week[s]             (seconds by default)

Examples: 16:00, 4:00PM, 16:00 tomorrow, now+1hour, now+30minutes, now+60, tomorrow, 2030-01-01T02:00, 0101,
01/01/30. Slurm refuses unit abbreviations (now+1h, now+5min), four-digit years after slashes, and one-digit
months or days in ISO dates, and takes `today` and `tomorrow` in lower case only (other words in any case); so does
this.
"""

from __future__ import annotations

import re

_CLOCK = r"(?P<h>\d{1,2}):(?P<m>\d{2})(?::(?P<s>\d{2}))?(?:\s*(?P<ampm>[AaPp][Mm]))?"
_NAMED_CLOCK = r"midnight|noon|elevenses|fika|teatime"
_ISO = r"(?P<iy>\d{4})-(?P<imo>\d{2})-(?P<id>\d{2})(?:T(?P<ih>\d{1,2}):(?P<imi>\d{2})(?::(?P<is>\d{2}))?)?"
# MMDD[YY] without separators; with them, one or two digits each (Slurm takes 1/1 and 01.01/30 alike).
_SHORT_DATE = r"(?P<mo>\d{2})(?P<d>\d{2})(?P<y>\d{2})?|(?P<smo>\d{1,2})[/.](?P<sd>\d{1,2})(?:[/.](?P<sy>\d{2}))?"
_NAMED_DAY = r"(?-i:today|tomorrow)"  # Slurm compares these two case-sensitively, unlike the other words
_NOW = re.compile(r"now(?:\s*[+-]\s*\d+\s*(?:(?:second|minute|hour|day|week)s?)?)?", re.IGNORECASE)

CLOCK = re.compile(rf"(?:{_CLOCK})|(?:{_NAMED_CLOCK})", re.IGNORECASE)
DAY = re.compile(rf"(?:{_ISO})|(?:{_SHORT_DATE})|(?:{_NAMED_DAY})", re.IGNORECASE)

EXAMPLES = "16:00, 4:00PM, 16:00 tomorrow, now+1hour, now+30minutes, tomorrow, 2030-01-01T02:00, 0101"


def _clock_ok(match: re.Match[str]) -> bool:
    if match.group("h") is None:
        return True  # a named time of day
    hour, minute, second = int(match.group("h")), int(match.group("m")), int(match.group("s") or 0)
    top = 12 if match.group("ampm") else 23
    return hour <= top and minute <= 59 and second <= 59


def _day_ok(match: re.Match[str]) -> bool:
    if match.group("iy") is not None:
        month, day = int(match.group("imo")), int(match.group("id"))
        if match.group("ih") is not None and (int(match.group("ih")) > 23 or int(match.group("imi")) > 59
                                              or int(match.group("is") or 0) > 59):
            return False
    elif match.group("mo") is not None:
        month, day = int(match.group("mo")), int(match.group("d"))
    elif match.group("smo") is not None:
        month, day = int(match.group("smo")), int(match.group("sd"))
    else:
        return True  # today, tomorrow
    return 1 <= month <= 12 and 1 <= day <= 31  # Slurm rolls 02/30 over into March, as mktime does


def is_begin_time(text: str) -> bool:
    """Whether `text` is a time `sbatch --begin` takes (see the module docstring)."""
    text = text.strip()
    if not text:
        return False
    if _NOW.fullmatch(text):
        return True
    for first, second in ((CLOCK, DAY), (DAY, CLOCK)):
        head = first.match(text)
        if head is None:
            continue
        rest = text[head.end():].lstrip()
        if not rest:
            if (first is CLOCK and _clock_ok(head)) or (first is DAY and _day_ok(head)):
                return True
            continue
        tail = second.fullmatch(rest)
        if tail is None:
            continue
        clock, day = (head, tail) if first is CLOCK else (tail, head)
        if _clock_ok(clock) and _day_ok(day):
            return True
    return False
