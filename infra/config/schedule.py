"""Parsers of the retraining keys' times: a CronJob schedule and a cooldown.

A schedule is what the API server accepts for a CronJob's ``spec.schedule``: Kubernetes
parses it with robfig/cron's standard parser (5 fields, or a descriptor such as @daily),
so this accepts exactly that grammar, a little stricter where robfig is lax (a ``+`` sign,
``*-5``) and without ``@every`` (a duration, not a schedule); ``TZ=`` is refused, as the
API server refuses it (the CronJob's timeZone is the stack's, UTC). The cluster tier
checks these against the real API server's dry run.
"""

from __future__ import annotations

import re
from typing import Any

from infra.config.errors import invalid
from infra.config.values import allows

DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (name, lowest, highest, names (for value lowest + index)).
FIELDS = (("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day of month", 1, 31, ()),
          ("month", 1, 12, MONTHS), ("day of week", 0, 6, DAYS))
SCHEDULE_RULE = ("a cron schedule of 5 fields, minute hour day-of-month month day-of-week "
                 "(numbers, *, ranges a-b, steps /n, lists a,b; JAN-DEC, SUN-SAT), such as "
                 "'0 3 * * 0' (Sundays at 03:00 UTC), or @hourly, @daily, @weekly, @monthly, "
                 "@yearly")
_ITEM = re.compile(r"(?P<range>\*|\?|(?P<low>[A-Za-z0-9]+)(-(?P<high>[A-Za-z0-9]+))?)"
                   r"(/(?P<step>\d+))?")
_COOLDOWN = re.compile(r"(\d+)(m|h|d)")
COOLDOWN_RULE = "a duration > 0 in m, h or d, such as 30m, 6h or 1d"


def _value(text: str, low: int, names: tuple[str, ...]) -> int | None:
    if text.isdigit():
        return int(text)
    lowered = text.lower()
    return low + names.index(lowered) if lowered in names else None


def _field_ok(text: str, low: int, high: int, names: tuple[str, ...]) -> bool:
    for item in text.split(","):
        match = _ITEM.fullmatch(item)
        if match is None:
            return False
        step = match.group("step")
        if step is not None and int(step) == 0:
            return False
        if match.group("low") is None:  # * or ?
            continue
        start = _value(match.group("low"), low, names)
        end = start if match.group("high") is None else _value(match.group("high"), low, names)
        if start is None or end is None or not low <= start <= end <= high:
            return False
    return True


def schedule_problem(text: str) -> str | None:
    """Why ``text`` is no CronJob schedule the API server accepts (None: it is one)."""
    if "TZ" in text:
        return "TZ= or CRON_TZ= in a schedule (the stack's CronJobs run in UTC)"
    if text.startswith("@"):
        return None if text in DESCRIPTORS else "an unknown descriptor"
    fields = text.split()
    if len(fields) != len(FIELDS):
        return f"{len(fields)} fields, not 5"
    for value, (name, low, high, names) in zip(fields, FIELDS, strict=True):
        if not _field_ok(value, low, high, names):
            return f"the {name} field '{value}' (allowed: {low}-{high})"
    return None


@allows(SCHEDULE_RULE)
def cron_schedule(key: str, raw: Any) -> str:
    text = str(raw).strip()
    problem = schedule_problem(text)
    if problem is not None:
        raise invalid(key, f"{SCHEDULE_RULE}; got {problem}", raw)
    return " ".join(text.split())


@allows(COOLDOWN_RULE)
def cooldown(key: str, raw: Any) -> str:
    """The least time between two retrains on drift (``python -m trainer retrain --cooldown``)."""
    text = str(raw).strip()
    match = _COOLDOWN.fullmatch(text)
    if not match or int(match.group(1)) == 0:
        raise invalid(key, COOLDOWN_RULE, raw)
    return text
