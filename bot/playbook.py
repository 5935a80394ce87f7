"""The team's policy (`playbook.yaml`), validated with Pydantic at start-up.

Every duration is written the way people say it (`30s`, `15m`, `1h`, `1h30m`) so drills and tests
can run a cadence in seconds.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone
from fractions import Fraction
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, field_validator

from bot.db import REPO_ROOT

DEFAULT_PLAYBOOK = REPO_ROOT / "playbook.yaml"
DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
DURATION_HINT = "use a duration such as 30s, 15m, 1h, 1h30m or 2d"


class PlaybookError(Exception):
    """The playbook file is missing or invalid; the message names each bad field."""


def parse_duration(text: str) -> timedelta:
    """`1h30m` -> 90 minutes; ValueError with the accepted forms otherwise."""
    cleaned = str(text).strip().lower().replace(" ", "")
    match = DURATION.match(cleaned)
    if not cleaned or not match or not any(match.groups()):
        raise ValueError(f"{text!r} is not a duration; {DURATION_HINT}")
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    duration = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    if duration <= timedelta(0):
        raise ValueError(f"{text!r} is zero; {DURATION_HINT}, or off")
    return duration


def format_duration(duration: timedelta | None) -> str:
    """The inverse of parse_duration, for showing a cadence back to people."""
    if duration is None:
        return "off"
    days, seconds = divmod(int(duration.total_seconds()), 86400)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = (f"{days}d" if days else "") + (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{seconds}s" if seconds else "")
    return text or "0s"


def _duration_or_off(value) -> timedelta | None:
    if isinstance(value, timedelta) or value is None:
        return value
    if isinstance(value, bool):  # YAML reads a bare `off` as False
        if value is False:
            return None
        raise ValueError(f"{value!r} is not a duration; {DURATION_HINT}, or off")
    if str(value).strip().lower() == "off":
        return None
    return parse_duration(value)


CadenceValue = Annotated[timedelta | None, BeforeValidator(_duration_or_off)]


class Cadence(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sev1: CadenceValue = timedelta(minutes=15)
    sev2: CadenceValue = timedelta(minutes=30)
    sev3: CadenceValue = timedelta(hours=1)
    sev4: CadenceValue = None


class Updates(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cadence: Cadence = Cadence()
    escalation_grace: str = "1/3"

    @field_validator("escalation_grace", mode="before")
    @classmethod
    def _grace_is_a_fraction_or_duration(cls, value) -> str:
        text = str(value).strip()
        try:
            fraction = Fraction(text)
        except (ValueError, ZeroDivisionError):
            parse_duration(text)  # raises with the accepted forms
            return text
        if not 0 < fraction <= 10:
            raise ValueError(f"{text!r} is not a fraction of the interval between 0 and 10 (e.g. 1/3)")
        return text


def _time_of_day(value) -> time:
    if isinstance(value, time):
        return value
    if isinstance(value, int) and not isinstance(value, bool):  # YAML 1.1 reads a bare 09:00 as 540
        value = f"{value // 60:02d}:{value % 60:02d}"
    try:
        parsed = time.fromisoformat(str(value).strip())
    except ValueError:
        raise ValueError(f"{value!r} is not a time of day; write it in UTC as HH:MM, like \"09:00\"") from None
    if parsed.tzinfo is not None:
        raise ValueError(f"{value!r} has a time zone; write it in UTC without one, like \"09:00\"")
    return parsed


class Actions(BaseModel):
    """When owners of corrective actions hear about them."""

    model_config = ConfigDict(extra="forbid")

    remind_before: Annotated[timedelta, BeforeValidator(parse_duration)] = timedelta(days=2)
    # Time of day (UTC) of the reminder on the due date; the early one comes `remind_before` earlier.
    remind_at: Annotated[time, BeforeValidator(_time_of_day)] = time(9, 0)


class Playbook(BaseModel):
    """The policy the war room holds responders to."""

    model_config = ConfigDict(extra="forbid")

    version: int = 1
    updates: Updates = Updates()
    actions: Actions = Actions()

    def update_interval(self, severity: int) -> timedelta | None:
        """How often an incident of this severity owes stakeholders an update (None: no cadence)."""
        return getattr(self.updates.cadence, f"sev{severity}")

    def escalation_grace(self, interval: timedelta) -> timedelta:
        """How long past due an update may slip before the incident commander is told."""
        text = self.updates.escalation_grace
        try:
            return interval * float(Fraction(text))
        except ValueError:
            return parse_duration(text)


    def action_reminder_times(self, due_on: date) -> tuple[datetime, datetime]:
        """When the owner of an action due on `due_on` is reminded: (early, on the day)."""
        on_the_day = datetime.combine(due_on, self.actions.remind_at, tzinfo=timezone.utc)
        return on_the_day - self.actions.remind_before, on_the_day


def load_playbook(path: Path | str | None = None) -> Playbook:
    """Read and validate the playbook, with one line per bad field in the error."""
    path = Path(path) if path else DEFAULT_PLAYBOOK
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise PlaybookError(f"{path}: no such playbook file (set WARROOM_PLAYBOOK or restore playbook.yaml)") from None
    except yaml.YAMLError as exc:
        raise PlaybookError(f"{path}: not valid YAML ({exc.__class__.__name__}: {exc})") from None
    try:
        return Playbook.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]) or "(top level)"
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "is not a playbook setting (check the spelling)"
            lines.append(f"{path.name}: {field}: {message}")
        raise PlaybookError("\n".join(lines)) from None
