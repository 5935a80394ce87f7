"""Tabletop drill scenarios (`scenarios/*.yaml`), validated with Pydantic against the playbook.

A scenario is a rehearsal of one kind of AI incident: the system the room is defending, a list of
timed injects released into the drill room, and an answer key the facilitator scores the room
against. Offsets and targets are scenario time, measured from the start of the drill, written like
the playbook's durations (`0m`, `4m`, `1h30m`).

One bad file must not take the others down with it: `load_scenarios` reports it in `broken` with a
one-line reason naming the field, the way playbook errors do, and loads the rest.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bot.playbook import DURATION, Playbook, RoleKeys, format_duration, parse_duration

# Every scenario rehearses one of these, so a team can see at a glance which kinds of incident it
# has practised; real incidents from the AI Incident Database are filed under the closest one.
FAMILIES = {
    "drift-misclassification": "a classifier's decisions go wrong after its inputs or upstream data change",
    "retrieval-leakage": "an assistant shows one user or tenant data that belongs to another",
    "prompt-injection-tool-misuse": "instructions hidden in content or a chat turn an agent's tools against its owner",
    "bias-after-refresh": "a retrained model's decisions about people shift against a group",
    "refusal-regression": "after a model or prompt change the assistant refuses or dodges ordinary requests",
}

# The room has to handle pressure from above or outside, not only technical alerts.
PRESSURE_KINDS = ("executive", "regulator")
WITHIN_KEYS = ("roles", "severity", "containment")
AIID_CITE = "https://incidentdatabase.ai/cite/{id}"
# Names become drill commands and channel names, so they stay lower-case slugs.
NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
OFFSET_HINT = "write 0m, 30s, 15m, 1h or 1h30m"


class _Problems(ValueError):
    """Problems found across fields, each with its location relative to the model that raised it.

    Pydantic keeps the raised exception in the error's context, so `_format_errors` can put each
    problem at its own field (``injects.3.at``) instead of at the model that noticed it.
    """

    def __init__(self, problems: list[tuple[tuple[str | int, ...], str]]):
        self.problems = problems
        super().__init__("; ".join(f"{_dotted(loc)}: {message}" for loc, message in problems))


def _dotted(loc) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _offset(value) -> timedelta:
    """Like parse_duration, but zero is allowed: the first inject usually lands as the drill starts."""
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise ValueError(f"{format_duration(-value)} before the start is not an offset; {OFFSET_HINT}")
        return value
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{value!r} is not a duration; {OFFSET_HINT}")
    if isinstance(value, int):
        if value == 0:
            return timedelta(0)
        # A bare number has no unit, and YAML 1.1 also reads 12:30 as the number 750.
        raise ValueError(f"{value!r} is not a duration (no unit); {OFFSET_HINT}")
    text = str(value).strip().lower().replace(" ", "")
    match = DURATION.match(text)
    if text and match and any(match.groups()) and not any(int(part or 0) for part in match.groups()):
        return timedelta(0)
    try:
        return parse_duration(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a duration; {OFFSET_HINT}") from None


def _length(value) -> timedelta:
    """A positive duration (the drill's length, a target)."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, (int, bool)) or value is None:
        raise ValueError(f"{value!r} is not a duration (no unit); write 30s, 15m, 1h or 1h30m")
    try:
        return parse_duration(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a duration; write 30s, 15m, 1h or 1h30m") from None


def _severity(value):
    # People say "sev1"; the incident stores 1.
    if isinstance(value, str) and value.strip().lower().startswith("sev"):
        return value.strip()[3:]
    return value


# In JSON, durations are written the way scenario files write them, so a dumped scenario (a drill's
# snapshot) validates again; Pydantic's ISO 8601 default ("PT45M") would not.
_AS_WRITTEN = PlainSerializer(format_duration, return_type=str, when_used="json")
Offset = Annotated[timedelta, BeforeValidator(_offset), _AS_WRITTEN]
Length = Annotated[timedelta, BeforeValidator(_length), _AS_WRITTEN]
Text = Annotated[str, Field(min_length=1)]


class Inject(BaseModel):
    """One timed event released into the drill room."""

    model_config = ConfigDict(extra="forbid")

    at: Offset  # from the start of the drill
    kind: Literal["alert", "ticket", "evidence", "executive", "regulator", "customer", "other"]
    source: Text
    text: Annotated[str, Field(min_length=1, max_length=1500)]  # long enough for a ticket, short enough to read aloud


class SystemOverview(BaseModel):
    """The system-overview pack: what the room would have open in another tab."""

    model_config = ConfigDict(extra="forbid")

    model: Text
    model_version: Text
    prompt_template: Text
    retrieval_sources: list[str]  # empty for a system without retrieval
    owners: dict[str, str]  # team or area -> who owns it
    dashboards: list[str]


class Expected(BaseModel):
    """The answer key the facilitator scores the room against."""

    model_config = ConfigDict(extra="forbid")

    severity: Annotated[int, BeforeValidator(_severity), Field(ge=1, le=4)]
    driver: Text
    failure_mode: Text
    # A logged containment action counts if it contains any keyword, so the room is not marked
    # down for wording it differently from the facilitator.
    containment: Annotated[list[Text], Field(min_length=1)]
    containment_hint: Text
    notification: Literal["notify", "not"]
    notification_reason: Text
    roles: Annotated[RoleKeys, Field(min_length=1)]
    within: dict[str, Length]
    discussion: Annotated[list[Text], Field(min_length=1)]

    @field_validator("driver")
    @classmethod
    def _driver_in_playbook(cls, driver: str, info: ValidationInfo) -> str:
        playbook = _playbook(info)
        if playbook is not None and driver not in playbook.taxonomy.drivers:
            raise ValueError(f"{driver!r} is not a driver in the playbook ({', '.join(playbook.taxonomy.drivers)})")
        return driver

    @field_validator("failure_mode")
    @classmethod
    def _failure_mode_in_playbook(cls, mode: str, info: ValidationInfo) -> str:
        playbook = _playbook(info)
        if playbook is None:
            return mode
        modes = playbook.taxonomy.failure_modes
        if mode in modes:
            return mode
        # Scores compare names, so an alias would never match what the room classified.
        canonical = playbook.taxonomy.failure_mode(mode)
        if canonical:
            raise ValueError(f"{mode!r} is an alias of {canonical!r}; write the failure mode itself")
        raise ValueError(f"{mode!r} is not a failure mode in the playbook ({', '.join(modes) or 'none defined'})")

    @field_validator("within")
    @classmethod
    def _every_target_once(cls, within: dict[str, timedelta]) -> dict[str, timedelta]:
        missing = [key for key in WITHIN_KEYS if key not in within]
        extra = [key for key in within if key not in WITHIN_KEYS]
        if missing or extra:
            wrong = ([f"missing {', '.join(missing)}"] if missing else []) + \
                    ([f"{', '.join(map(repr, extra))} is not a target" if len(extra) == 1
                      else f"{', '.join(map(repr, extra))} are not targets"] if extra else [])
            raise ValueError(f"{'; '.join(wrong)}; give exactly {', '.join(WITHIN_KEYS)}")
        return within


def _playbook(info: ValidationInfo) -> Playbook | None:
    # Without a playbook in the context (a scenario built in a test), the taxonomy is not checked.
    return (info.context or {}).get("playbook")


class Credit(BaseModel):
    """Where a scenario built on a real incident comes from: CC BY-SA asks for attribution."""

    model_config = ConfigDict(extra="forbid")

    aiid_incident_id: Annotated[int, Field(gt=0)]
    title: Text
    url: Text
    licence: Text = "CC BY-SA 4.0"
    note: Text

    @model_validator(mode="after")
    def _url_cites_the_incident(self) -> Credit:
        expected = AIID_CITE.format(id=self.aiid_incident_id)
        if self.url.rstrip("/") != expected:
            raise _Problems([(("url",), f"{self.url!r} does not cite incident {self.aiid_incident_id}; "
                                               f"write {expected}")])
        return self


class Scenario(BaseModel):
    """A tabletop drill: the system, the injects in order, and the answer key."""

    model_config = ConfigDict(extra="forbid")

    name: str  # from the file name, so two files cannot claim the same scenario
    title: Annotated[str, Field(min_length=1, max_length=120)]  # becomes the drill incident's title
    family: str
    background: Text
    simulated: Annotated[list[Text], Field(min_length=1)]  # rules of engagement: what is pretend
    duration: Length
    system: SystemOverview
    injects: Annotated[list[Inject], Field(min_length=3)]
    expected: Expected
    credit: Credit | None = None

    @field_validator("name")
    @classmethod
    def _name_is_a_slug(cls, name: str) -> str:
        if not NAME.match(name):
            raise ValueError(f"{name!r} is not a scenario name; name the file in lower case with dashes, "
                             "like retrieval-leakage.yaml")
        return name

    @field_validator("family")
    @classmethod
    def _known_family(cls, family: str) -> str:
        if family not in FAMILIES:
            raise ValueError(f"{family!r} is not a scenario family ({', '.join(FAMILIES)})")
        return family

    @model_validator(mode="after")
    def _timeline_fits(self) -> Scenario:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        end = format_duration(self.duration)
        for index, inject in enumerate(self.injects):
            if inject.at >= self.duration:
                problems.append((("injects", index, "at"), f"{format_duration(inject.at)} is not before the end "
                                                           f"of the drill (duration {end})"))
            if index and inject.at < self.injects[index - 1].at:
                problems.append((("injects", index, "at"),
                                 f"{format_duration(inject.at)} comes before the previous inject "
                                 f"({format_duration(self.injects[index - 1].at)}); list injects in time order"))
        if not any(inject.kind in PRESSURE_KINDS for inject in self.injects):
            problems.append((("injects",), "no executive or regulator inject; the room should rehearse "
                                           "pressure from above or outside, not only alerts"))
        for key, target in self.expected.within.items():
            if target > self.duration:
                problems.append((("expected", "within", key), f"{format_duration(target)} is after the end "
                                                              f"of the drill (duration {end})"))
        if problems:
            raise _Problems(problems)
        return self


@dataclass
class ScenarioCatalog:
    scenarios: dict[str, Scenario] = field(default_factory=dict)  # by name, sorted by name
    broken: dict[str, str] = field(default_factory=dict)  # file name -> one-line reason


def default_folder() -> Path:
    """`scenarios/` at the repository root, or WARROOM_SCENARIOS."""
    configured = os.environ.get("WARROOM_SCENARIOS", "").strip()
    return Path(configured) if configured else Path(__file__).resolve().parent.parent / "scenarios"


def load_scenarios(folder: Path | str, playbook: Playbook) -> ScenarioCatalog:
    """Every `*.yaml` in `folder`, validated against `playbook`; bad files go to `broken`."""
    folder = Path(folder)
    catalog = ScenarioCatalog()
    if not folder.is_dir():
        return catalog
    loaded: dict[str, Scenario] = {}
    # Editors leave hidden lock files (.#retrieval-leakage.yaml) next to the real ones.
    for path in sorted(p for p in folder.glob("*.yaml") if not p.name.startswith(".")):
        try:
            loaded[path.stem] = _load_one(path, playbook)
        except _Broken as exc:
            catalog.broken[path.name] = str(exc)
    catalog.scenarios = dict(sorted(loaded.items()))
    return catalog


class _Broken(Exception):
    pass


def _load_one(path: Path, playbook: Playbook) -> Scenario:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise _Broken("not UTF-8 text") from None
    except OSError as exc:
        raise _Broken(f"cannot be read ({exc.strerror or exc.__class__.__name__})") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        raise _Broken(f"not valid YAML{at}: {problem}") from None
    if data is None:
        raise _Broken("is empty; expected a mapping of scenario fields (title, family, background, …)")
    if not isinstance(data, dict):
        raise _Broken(f"is a YAML {_yaml_kind(data)}, not a mapping of scenario fields (title, family, background, …)")
    if "name" in data:
        raise _Broken(f"name: comes from the file name ({path.stem}); remove it from the file")
    try:
        return Scenario.model_validate({"name": path.stem, **data}, context={"playbook": playbook})
    except ValidationError as exc:
        raise _Broken(_format_errors(exc)) from None


def _yaml_kind(data) -> str:
    if isinstance(data, list):
        return "list"
    if isinstance(data, str):
        return "string"
    return type(data).__name__


def _format_errors(exc: ValidationError) -> str:
    lines: list[str] = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        raised = (error.get("ctx") or {}).get("error")
        if isinstance(raised, _Problems):
            lines.extend(f"{_dotted(loc + sub)}: {message}" for sub, message in raised.problems)
            continue
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "is not a scenario field (check the spelling)"
        elif error["type"] == "missing":
            message = "is missing"
        elif error["type"] == "too_short":
            count, least = error["ctx"]["actual_length"], error["ctx"]["min_length"]
            message = f"has {count}; give at least {least}"
        elif error["type"] == "literal_error":
            message = f"{error['input']!r} is not one of {error['ctx']['expected']}"
        lines.append(f"{_dotted(loc)}: {message}")
    # One line: the catalog is shown as a list, one file per line.
    return "; ".join(lines)
