"""Readiness across incidents: how fast the response was, whether the team learned, how drills score.

For real incidents only (drills are left out of every incident measure): mean and median time to
detect, acknowledge, contain and resolve by quarter of declaration, measured exactly as the
postmortem measures them (`bot.postmortem.milestones`); postmortems completed within 10 business
days of resolving; corrective actions closed on time. Drills appear only in their own part: each
ended drill's score over time, by scenario family. The report is Markdown
(templates/readiness.md.j2) with a PNG chart beside it. No Slack here.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.export import ENTRY_COLUMNS, IncidentRecord
from bot.models import CorrectiveAction, Drill, Incident, TimelineEntry
from bot.postmortem import Milestones, format_span, milestones
from bot.render import render_markdown

# (key, label, what it measures): the four times, as Milestones names them (time_to_<key>).
MEASURES = (
    ("detect", "Time to detect", "impact start → detected"),
    ("acknowledge", "Time to acknowledge", "detected → first role taken"),
    ("contain", "Time to contain", "detected → first move to contained, monitoring or resolved"),
    ("resolve", "Time to resolve", "detected → last move to resolved"),
)
# The only timeline entries `postmortem.milestones` reads; the rest of a long timeline is not loaded.
MILESTONE_KINDS = ("role", "status")
POSTMORTEM_BUSINESS_DAYS = 10
MARKDOWN_NAME = "readiness.md"
CHART_NAME = "readiness.png"
CHART_DPI = 150


# ------------------------------------------------------------------------------------- calendar

def quarter_of(moment: datetime) -> str:
    """`2026-Q3`, by the UTC date."""
    moment = moment.astimezone(timezone.utc)
    return f"{moment.year}-Q{(moment.month - 1) // 3 + 1}"


def quarters_between(first: str, last: str) -> list[str]:
    """Every quarter from `first` to `last`, both included (empty quarters in between show as such)."""
    year, q = int(first[:4]), int(first[-1])
    found = []
    while f"{year}-Q{q}" <= last:
        found.append(f"{year}-Q{q}")
        year, q = (year + 1, 1) if q == 4 else (year, q + 1)
    return found


def is_business_day(day: date) -> bool:
    return day.weekday() < 5  # Monday to Friday; no holiday calendar


def add_business_days(start: date, days: int) -> date:
    """The day `days` business days after `start` (counting from the next day)."""
    day = start
    while days > 0:
        day += timedelta(days=1)
        days -= is_business_day(day)
    return day


def business_days_between(start: date, end: date) -> int:
    """Business days after `start` up to and including `end`: Thursday → next Tuesday is 3."""
    count, day = 0, start
    while day < end:
        day += timedelta(days=1)
        count += is_business_day(day)
    return count


# ------------------------------------------------------------------------------------- the report

class Stat(BaseModel):
    """One measure over a set of incidents: how many have it, and its mean and median."""

    count: int = 0
    mean: timedelta | None = None
    median: timedelta | None = None

    @classmethod
    def of(cls, spans: list[timedelta]) -> Stat:
        if not spans:
            return cls()
        seconds = [span.total_seconds() for span in spans]
        return cls(count=len(spans), mean=timedelta(seconds=statistics.fmean(seconds)),
                   median=timedelta(seconds=statistics.median(seconds)))

    @property
    def mean_minutes(self) -> float | None:
        return self.mean.total_seconds() / 60 if self.mean is not None else None

    def cell(self, incidents: int) -> str:
        """`25m 00s / 25m 00s`, with `(1 of 3)` when not every incident has the measure; `—` if none."""
        if not self.count:
            return "—"
        text = f"{format_span(self.mean)} / {format_span(self.median)}"
        return text if self.count == incidents else f"{text} ({self.count} of {incidents})"


class ActionCounts(BaseModel):
    """Corrective actions by how they stand against their due date."""

    on_time: int = 0  # done on or before the due date (UTC)
    late: int = 0  # done after it
    overdue: int = 0  # not done, due date past
    not_yet_due: int = 0  # not done, due today or later

    @property
    def total(self) -> int:
        return self.on_time + self.late + self.overdue + self.not_yet_due

    @property
    def rate(self) -> float | None:
        """On time / (on time + late + overdue): actions not yet due count neither way."""
        judged = self.on_time + self.late + self.overdue
        return self.on_time / judged if judged else None


class PostmortemCounts(BaseModel):
    """Resolved real incidents by when their postmortem was completed."""

    on_time: int = 0  # within the business days allowed
    late: int = 0  # completed, but after
    missing: int = 0  # not completed, and the time allowed is over
    pending: int = 0  # not completed, still within the time allowed

    @property
    def resolved(self) -> int:
        return self.on_time + self.late + self.missing + self.pending

    @property
    def rate(self) -> float | None:
        """On time / (on time + late + missing): those still within their window count neither way."""
        judged = self.on_time + self.late + self.missing
        return self.on_time / judged if judged else None


class QuarterRow(BaseModel):
    quarter: str  # `2026-Q3`, or `All` for the whole period
    incidents: int
    times: dict[str, Stat]  # by MEASURES key
    postmortems: PostmortemCounts
    actions: ActionCounts


class PostmortemLine(BaseModel):
    reference: str
    title: str
    resolved_at: datetime
    due_on: date
    completed_at: datetime | None
    business_days: int | None  # from resolving to completing, when completed
    state: str  # on time | late | missing | pending


class ActionLine(BaseModel):
    reference: str  # INC-42 A1
    incident_title: str
    text: str
    owner_id: str
    due_on: date
    done_at: datetime | None
    state: str  # on time | late | overdue | not yet due


class DrillPoint(BaseModel):
    reference: str
    scenario: str
    started_at: datetime
    ended_at: datetime
    score: int
    max_score: int

    @property
    def percent(self) -> float:
        return 100.0 * self.score / self.max_score


class DrillFamily(BaseModel):
    family: str
    drills: list[DrillPoint]  # by start

    @property
    def mean_percent(self) -> float:
        return statistics.fmean(point.percent for point in self.drills)


class Readiness(BaseModel):
    since: date | None
    generated_at: datetime
    quarters: list[QuarterRow]  # oldest first, empty quarters in between included
    overall: QuarterRow
    postmortems: list[PostmortemLine]  # every resolved real incident, by resolution
    actions: list[ActionLine]  # every action of a real incident, by due date
    drills: list[DrillFamily]  # by family name
    drill_incidents_left_out: int  # drill incidents declared in the period, not counted above
    drills_running: int  # drills started in the period and not ended, left out of the scores

    @property
    def period(self) -> str:
        start = f"{self.since.isoformat()}" if self.since else "all time"
        return f"{start} to {self.generated_at.astimezone(timezone.utc).date().isoformat()}"

    @property
    def late_postmortems(self) -> list[PostmortemLine]:
        return [line for line in self.postmortems if line.state != "on time"]

    @property
    def late_actions(self) -> list[ActionLine]:
        return [line for line in self.actions if line.state in ("late", "overdue")]


# ------------------------------------------------------------------------------------- reading

def _start_of(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=timezone.utc)


def _record(incident: Incident, timeline: list[tuple]) -> IncidentRecord:
    """The record `postmortem.milestones` reads, as `export.read_record` builds it, with only the
    timeline entries it looks at (MILESTONE_KINDS) and no actions."""
    facts = {name: getattr(incident, name) for name in (
        "id", "number", "reference", "title", "summary", "severity", "status", "declared_by", "declared_at",
        "resolved_at", "impact_started_at", "detected_at", "channel_id", "channel_name")}
    facts["roles"] = {}
    return IncidentRecord(incident=facts, timeline=timeline, actions=[])


def incident_milestones(session: Session, incidents: list[Incident]) -> dict[int, Milestones]:
    """Each incident's milestones, from one query for all their role and status entries."""
    ids = [incident.id for incident in incidents]
    rows: dict[int, list[tuple]] = defaultdict(list)
    for start in range(0, len(ids), 500):  # bounded IN lists
        statement = (select(TimelineEntry.incident_id, *ENTRY_COLUMNS)
                     .where(TimelineEntry.incident_id.in_(ids[start:start + 500]),
                            TimelineEntry.kind.in_(MILESTONE_KINDS))
                     .order_by(TimelineEntry.occurred_at, TimelineEntry.id))
        for incident_id, *entry in session.execute(statement):
            rows[incident_id].append(tuple(entry))
    return {incident.id: milestones(_record(incident, rows[incident.id])) for incident in incidents}


def _postmortem_line(incident: Incident, today: date) -> PostmortemLine:
    resolved_on = incident.resolved_at.astimezone(timezone.utc).date()
    due_on = add_business_days(resolved_on, POSTMORTEM_BUSINESS_DAYS)
    completed = incident.postmortem_completed_at
    if completed is not None:
        completed_on = completed.astimezone(timezone.utc).date()
        days = business_days_between(resolved_on, completed_on)
        state = "on time" if completed_on <= due_on else "late"
    else:
        days, state = None, "missing" if today > due_on else "pending"
    return PostmortemLine(reference=incident.reference, title=incident.title, resolved_at=incident.resolved_at,
                          due_on=due_on, completed_at=completed, business_days=days, state=state)


def _action_line(action: CorrectiveAction, incident: Incident, today: date) -> ActionLine:
    if action.done_at is not None:
        state = "on time" if action.done_at.astimezone(timezone.utc).date() <= action.due_on else "late"
    else:
        state = "overdue" if action.due_on < today else "not yet due"
    return ActionLine(reference=f"{incident.reference} A{action.number}", incident_title=incident.title,
                      text=action.text, owner_id=action.owner_id, due_on=action.due_on, done_at=action.done_at,
                      state=state)


def _count(counts: BaseModel, state: str) -> None:
    name = state.replace(" ", "_")
    setattr(counts, name, getattr(counts, name) + 1)


def _row(quarter: str, incidents: list[Incident], marks: dict[int, Milestones],
         postmortems: list[PostmortemLine], actions: list[ActionLine]) -> QuarterRow:
    times = {}
    for key, _label, _what in MEASURES:
        spans = [getattr(marks[incident.id], f"time_to_{key}") for incident in incidents]
        times[key] = Stat.of([span for span in spans if span is not None])
    pm_counts, action_counts = PostmortemCounts(), ActionCounts()
    for line in postmortems:
        _count(pm_counts, line.state)
    for line in actions:
        _count(action_counts, line.state)
    return QuarterRow(quarter=quarter, incidents=len(incidents), times=times, postmortems=pm_counts,
                      actions=action_counts)


def build_report(session: Session, since: date | None, now: datetime) -> Readiness:
    """Readiness of incidents declared (and drills started) on or after `since` (all if None), as of `now`."""
    today = now.astimezone(timezone.utc).date()
    in_period = [Incident.declared_at >= _start_of(since)] if since else []

    incidents = list(session.scalars(select(Incident).where(Incident.is_drill.is_(False), *in_period)
                                     .order_by(Incident.declared_at, Incident.number)))
    drill_incidents = session.scalar(select(func.count(Incident.id)).where(Incident.is_drill.is_(True), *in_period))
    marks = incident_milestones(session, incidents)
    quarter = {incident.id: quarter_of(incident.declared_at) for incident in incidents}

    postmortems = {incident.id: _postmortem_line(incident, today)
                   for incident in sorted((i for i in incidents if i.resolved_at is not None),
                                          key=lambda i: (i.resolved_at, i.number))}
    action_rows = session.execute(
        select(CorrectiveAction, Incident).join(Incident, Incident.id == CorrectiveAction.incident_id)
        .where(Incident.is_drill.is_(False), *in_period)
        .order_by(CorrectiveAction.due_on, Incident.number, CorrectiveAction.number)).all()
    actions = [(incident.id, _action_line(action, incident, today)) for action, incident in action_rows]

    rows = []
    if incidents:
        for label in quarters_between(min(quarter.values()), max(quarter.values())):
            rows.append(_row(label, [i for i in incidents if quarter[i.id] == label], marks,
                             [line for i, line in postmortems.items() if quarter[i] == label],
                             [line for i, line in actions if quarter[i] == label]))
    overall = _row("All", incidents, marks, list(postmortems.values()), [line for _i, line in actions])

    drill_filter = [Drill.started_at >= _start_of(since)] if since else []
    families: dict[str, list[DrillPoint]] = defaultdict(list)
    running = 0
    for drill, incident in session.execute(
            select(Drill, Incident).join(Incident, Incident.id == Drill.incident_id).where(*drill_filter)
            .order_by(Drill.started_at, Drill.id)):
        if drill.ended_at is None or drill.score is None or not drill.max_score:
            running += drill.ended_at is None
            continue
        families[drill.family].append(DrillPoint(
            reference=incident.reference, scenario=drill.scenario, started_at=drill.started_at,
            ended_at=drill.ended_at, score=drill.score, max_score=drill.max_score))

    return Readiness(
        since=since, generated_at=now, quarters=rows, overall=overall, postmortems=list(postmortems.values()),
        actions=[line for _i, line in actions],
        drills=[DrillFamily(family=name, drills=points) for name, points in sorted(families.items())],
        drill_incidents_left_out=drill_incidents, drills_running=running,
    )


# ------------------------------------------------------------------------------------- writing

def percent(rate: float | None) -> str:
    return "—" if rate is None else f"{100 * rate:.0f}%"


def render_report(readiness: Readiness) -> str:
    return render_markdown(
        "readiness.md.j2", r=readiness, measures=MEASURES, percent=percent, span=format_span,
        chart=CHART_NAME, business_days=POSTMORTEM_BUSINESS_DAYS,
    ) + "\n"


def _placeholder(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12, color="0.4", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_chart(readiness: Readiness, path: Path) -> None:
    """Three panels: mean times by quarter, drill scores over time by family, on-time rates by quarter."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no screen, Agg when saved as PNG

    figure = Figure(figsize=(10, 13), layout="constrained")
    times_ax, drills_ax, rates_ax = figure.subplots(3, 1)
    figure.suptitle(f"Readiness, {readiness.period}", fontsize=15, fontweight="bold")

    quarters = readiness.quarters
    times_ax.set_title("Mean response times of real incidents, by quarter declared")
    if quarters:
        width = 0.8 / len(MEASURES)
        positions = range(len(quarters))
        for index, (key, label, _what) in enumerate(MEASURES):
            values = [row.times[key].mean_minutes for row in quarters]
            bars = times_ax.bar([p + (index - 1.5) * width for p in positions],
                                [v if v is not None else 0 for v in values], width, label=label)
            times_ax.bar_label(bars, labels=[f"{v:.0f}" if v is not None else "—" for v in values], fontsize=8)
        times_ax.set_xticks(list(positions), [f"{row.quarter}\n{row.incidents} incident"
                                              f"{'' if row.incidents == 1 else 's'}" for row in quarters])
        times_ax.set_ylabel("minutes (mean)")
        times_ax.legend(fontsize=9, ncols=4, loc="upper left")
        times_ax.margins(y=0.2)
        times_ax.grid(axis="y", alpha=0.3)
    else:
        _placeholder(times_ax, "no real incidents yet")

    drills_ax.set_title("Drill scores over time, by scenario family")
    if readiness.drills:
        for family in readiness.drills:
            drills_ax.plot([point.started_at for point in family.drills], [point.percent for point in family.drills],
                           marker="o", label=f"{family.family} (mean {family.mean_percent:.0f}%)")
        drills_ax.set_ylim(0, 105)
        drills_ax.set_ylabel("score (% of maximum)")
        drills_ax.legend(fontsize=9, loc="lower right")
        drills_ax.grid(alpha=0.3)
        for text in drills_ax.get_xticklabels():
            text.set_rotation(20)
    else:
        _placeholder(drills_ax, "no ended drills yet")

    rates_ax.set_title(f"Follow-through: postmortems within {POSTMORTEM_BUSINESS_DAYS} business days, "
                       "corrective actions closed on time")
    if quarters:
        positions = range(len(quarters))
        for offset, label, rates in (
                (-0.2, "postmortems on time", [row.postmortems.rate for row in quarters]),
                (0.2, "corrective actions on time", [row.actions.rate for row in quarters])):
            bars = rates_ax.bar([p + offset for p in positions], [100 * r if r is not None else 0 for r in rates],
                                0.4, label=label)
            rates_ax.bar_label(bars, labels=[percent(r) for r in rates], fontsize=8)
        rates_ax.set_xticks(list(positions), [row.quarter for row in quarters])
        rates_ax.set_ylim(0, 115)
        rates_ax.set_ylabel("% on time")
        rates_ax.legend(fontsize=9, loc="upper left", ncols=2)
        rates_ax.grid(axis="y", alpha=0.3)
    else:
        _placeholder(rates_ax, "no real incidents yet")
    figure.savefig(path, dpi=CHART_DPI, format="png")


def write_report(readiness: Readiness, folder: Path | str) -> tuple[Path, Path]:
    """readiness.md and readiness.png (which the Markdown embeds) in `folder`, made if missing."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    md_path, png_path = folder / MARKDOWN_NAME, folder / CHART_NAME
    draw_chart(readiness, png_path)
    md_path.write_text(render_report(readiness), encoding="utf-8")
    return md_path, png_path
