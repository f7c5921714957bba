"""EventBridge schedule expressions (`rate(...)`, `cron(...)`, UTC): parsed, validated, and able to say
when they next fire. Periodic tasks use it for their next run; the local ticker uses it to fire them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from croniter import croniter

_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_CRON = re.compile(r"^cron\((.+)\)$")
_DOW_NAMES = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"}


class ScheduleExpressionError(ValueError):
    pass


def _dow_to_croniter(field_: str) -> str:
    """EventBridge numbers days 1-7 from Sunday; croniter 0-6 from Sunday. Names pass through."""

    def day(token: str) -> str:
        if token.upper() in _DOW_NAMES or token == "*":
            return token
        if not (token.isascii() and token.isdigit()) or not 1 <= int(token) <= 7:
            raise ScheduleExpressionError(f"day-of-week {token!r} is not 1-7 or SUN-SAT")
        return str(int(token) - 1)

    parts = []
    for part in field_.split(","):
        if "#" in part:
            d, nth = part.split("#", 1)
            parts.append(f"{day(d)}#{nth}")
        elif "/" in part:
            start, step = part.split("/", 1)
            parts.append(f"{day(start)}/{step}")
        elif "-" in part:
            a, b = part.split("-", 1)
            parts.append(f"{day(a)}-{day(b)}")
        elif part.endswith("L") and part != "L":
            parts.append(f"L{day(part[:-1])}")
        else:
            parts.append(day(part))
    return ",".join(parts)


def _years(field_: str) -> set[int] | None:
    if field_ in ("*", "?"):
        return None
    years: set[int] = set()
    for part in field_.split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            years.update(range(int(a), int(b) + 1))
        else:
            years.add(int(part))
    return years


@dataclass
class ScheduleExpression:
    """A parsed EventBridge schedule expression that can say when it next fires."""

    text: str
    interval: timedelta | None = None
    cron: str | None = None
    years: set[int] | None = None

    @classmethod
    def parse(cls, text: str) -> ScheduleExpression:
        text = text.strip()
        rate = _RATE.match(text)
        if rate:
            value, unit = int(rate.group(1)), rate.group(2)
            if value < 1:
                raise ScheduleExpressionError(f"{text}: the rate must be at least 1")
            if (value == 1) != (not unit.endswith("s")):
                raise ScheduleExpressionError(f"{text}: use '1 {unit.rstrip('s')}' or 'N {unit.rstrip('s')}s'")
            seconds = {"minute": 60, "hour": 3600, "day": 86400}[unit.rstrip("s")]
            return cls(text=text, interval=timedelta(seconds=value * seconds))
        cron = _CRON.match(text)
        if cron:
            fields = cron.group(1).split()
            if len(fields) != 6:
                raise ScheduleExpressionError(f"{text}: cron needs 6 fields (minutes hours dom month dow year)")
            minutes, hours, dom, month, dow, year = fields
            if (dom == "?") == (dow == "?"):
                raise ScheduleExpressionError(f"{text}: exactly one of day-of-month and day-of-week must be '?'")
            dom = "*" if dom == "?" else dom
            dow = "*" if dow == "?" else _dow_to_croniter(dow)
            expression = f"{minutes} {hours} {dom} {month} {dow}"
            if not croniter.is_valid(expression):
                raise ScheduleExpressionError(f"{text}: not a valid cron expression")
            return cls(text=text, cron=expression, years=_years(year))
        raise ScheduleExpressionError(f"{text!r} is neither rate(...) nor cron(...)")

    def next_after(self, moment: datetime, *, started: datetime | None = None) -> datetime:
        """The first fire time strictly after `moment`. Rates count from `started` (creation), like EventBridge."""
        if self.interval is not None:
            origin = started or moment
            elapsed = max(moment - origin, timedelta(0))
            periods = int(elapsed / self.interval) + 1
            return origin + periods * self.interval
        assert self.cron is not None
        candidate = moment
        for _ in range(1000):
            candidate = croniter(self.cron, candidate).get_next(datetime)
            if self.years is None or candidate.year in self.years:
                return candidate
        raise ScheduleExpressionError(f"{self.text}: never fires again")
