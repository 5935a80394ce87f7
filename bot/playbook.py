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
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

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


class FailureMode(BaseModel):
    """What the room is told the moment an incident is classified with this failure mode."""

    model_config = ConfigDict(extra="forbid")

    description: str
    containment: str  # the one fast action that limits harm
    diagnostic: str  # the one question that finds the cause fastest


class Taxonomy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    drivers: dict[str, str] = {
        "model": "the model itself: weights, version, sampling",
        "data": "training, fine-tuning or retrieval data",
        "platform": "serving, tools, integrations, infrastructure",
        "policy": "prompts, guardrails, product or safety policy",
    }
    failure_modes: dict[str, FailureMode] = {}
    # Other names people use, and the failure mode they count as (prompt-injection -> misuse).
    aliases: dict[str, str] = {}

    @model_validator(mode="after")
    def _aliases_name_failure_modes(self) -> Taxonomy:
        for alias, target in self.aliases.items():
            if target not in self.failure_modes:
                raise ValueError(f"alias {alias!r} points to {target!r}, which is not a failure mode "
                                 f"({', '.join(self.failure_modes) or 'none defined'})")
        return self

    def failure_mode(self, name: str) -> str | None:
        """The failure mode a name stands for (itself, or what an alias points to), or None."""
        name = name.lower()
        return name if name in self.failure_modes else self.aliases.get(name)


class Trigger(BaseModel):
    """When a rule applies: every condition given must hold."""

    model_config = ConfigDict(extra="forbid")

    failure_mode: str | None = None
    severity_at_most: int | None = Field(None, ge=1, le=4)  # sev1 is 1: "at most 2" means sev1 or sev2
    flag: str | None = None


def _known_roles(roles: list[str]) -> list[str]:
    from bot.models import ROLES  # the schema module pulls in SQLAlchemy; only needed here

    unknown = [role for role in roles if role not in ROLES]
    if unknown:
        raise ValueError(f"unknown role {', '.join(unknown)}; roles are {', '.join(ROLES)}")
    return roles


# Role keys (ic, comms, …) in policy files: the playbook's rules and the drill scenarios.
RoleKeys = Annotated[list[str], AfterValidator(_known_roles)]


class Requirement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    roles: RoleKeys = []
    within: Annotated[timedelta, BeforeValidator(parse_duration)] = timedelta(minutes=30)


class Rule(BaseModel):
    """If `when` holds, the room is told `post`, and `require` must be met in time."""

    model_config = ConfigDict(extra="forbid")

    name: str
    when: Trigger
    require: Requirement | None = None
    post: str = ""
    start_notification_assessment: bool = False


class EvidenceItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str
    hint: str = ""


class Evidence(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: dict[str, EvidenceItem] = {}
    # Resolving an incident this severe or worse needs every item and verified containment.
    gate_resolve_at_most_severity: int = Field(2, ge=0, le=4)


class NotificationClock(BaseModel):
    """A duty to notify someone by a deadline, which applies when every named answer is yes."""

    model_config = ConfigDict(extra="forbid")

    name: str
    when: list[str]  # notification questions that must all be answered yes
    within: Annotated[timedelta, BeforeValidator(parse_duration)]  # from awareness (detection)
    remind_before: list[Annotated[timedelta, BeforeValidator(parse_duration)]] = []


class Notification(BaseModel):
    model_config = ConfigDict(extra="forbid")

    questions: dict[str, str] = {}
    clocks: list[NotificationClock] = []

    @model_validator(mode="after")
    def _clocks_ask_known_questions(self) -> Notification:
        for clock in self.clocks:
            unknown = [name for name in clock.when if name not in self.questions]
            if unknown:
                raise ValueError(f"clock {clock.name!r} depends on {', '.join(unknown)}, not among the questions "
                                 f"({', '.join(self.questions) or 'none'})")
        return self


class Audience(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str
    # What this audience needs from an update; the drafted form opens with it as a guide.
    guidance: str = ""
    # Seen outside the company: statements that need evidence are held back until it is recorded.
    external: bool = False


class HeldStatement(BaseModel):
    """A claim an external update may make only once the evidence behind it is recorded."""

    model_config = ConfigDict(extra="forbid")

    statement: str
    requires: list[str]  # evidence items


class Playbook(BaseModel):
    """The policy the war room holds responders to."""

    model_config = ConfigDict(extra="forbid")

    version: int = 1
    # What each severity means, shown by `/incident sev` and in the declare form.
    severity: dict[str, str] = {
        "sev1": "critical: users harmed now, or data exposed",
        "sev2": "major: many users, or sensitive decisions affected",
        "sev3": "minor: limited impact, a workaround exists",
        "sev4": "low: no user impact yet",
    }
    updates: Updates = Updates()
    actions: Actions = Actions()
    taxonomy: Taxonomy = Taxonomy()
    flags: dict[str, str] = {}
    rules: list[Rule] = []
    evidence: Evidence = Evidence()
    # The five-minute impact checklist: question key -> the question.
    impact: dict[str, str] = {}
    notification: Notification = Notification()
    audiences: dict[str, Audience] = {}
    held_statements: list[HeldStatement] = []

    @field_validator("held_statements")
    @classmethod
    def _held_statements_need_known_evidence(cls, held: list[HeldStatement],
                                             info: ValidationInfo) -> list[HeldStatement]:
        evidence = info.data.get("evidence")
        items = evidence.items if evidence else {}
        for statement in held:
            unknown = [item for item in statement.requires if item not in items]
            if unknown:
                raise ValueError(f"{statement.statement!r} requires {', '.join(unknown)}, not among evidence.items "
                                 f"({', '.join(items) or 'none'})")
        return held

    @field_validator("severity")
    @classmethod
    def _every_severity_described(cls, severity: dict[str, str]) -> dict[str, str]:
        expected = {"sev1", "sev2", "sev3", "sev4"}
        if set(severity) != expected:
            raise ValueError(f"describe exactly sev1, sev2, sev3 and sev4 (got {', '.join(sorted(severity))})")
        return severity

    @field_validator("rules")
    @classmethod
    def _rules_name_what_exists(cls, rules: list[Rule], info: ValidationInfo) -> list[Rule]:
        # taxonomy and flags are declared above rules, so they are validated (and in info.data) first.
        taxonomy, flags = info.data.get("taxonomy"), info.data.get("flags", {})
        for index, rule in enumerate(rules):
            mode, flag = rule.when.failure_mode, rule.when.flag
            if mode and taxonomy and mode not in taxonomy.failure_modes:
                raise ValueError(f"rule {index} ({rule.name!r}): failure_mode {mode!r} "
                                 "is not in taxonomy.failure_modes")
            if flag and flag not in flags:
                raise ValueError(f"rule {index} ({rule.name!r}): flag {flag!r} is not in flags")
        names = [rule.name for rule in rules]
        if len(set(names)) != len(names):
            raise ValueError("two rules have the same name; each rule fires once per incident by its name")
        return rules

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
