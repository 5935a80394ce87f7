"""Readiness: response times by quarter, postmortems within 10 business days, corrective actions on
time, drill scores by family; computed from a hand-built history where every number is known, on
SQLite and PostgreSQL, in-process and through `warroom readiness`.

The history (all times UTC; "now" is 2026-10-15 12:00):

Real incidents (detection is the declaration unless marked):
  INC-1 Thu 2026-05-07 10:00  impact 09:40; role 10:05; contained 10:45; resolved 12:00
        TTD 20m, TTA 5m, TTC 45m, TTR 2h. Postmortem Tue 05-12 = 3 business days (over a weekend): on time.
  INC-2 Fri 2026-06-12 14:00  detected 13:30, impact 13:00; role 14:10; monitoring 15:30; resolved 17:30
        TTD 30m, TTA 40m, TTC 2h (monitoring counts as contained), TTR 4h.
        Postmortem Tue 06-30 = 12 business days (18 calendar days, two weekends): late (due 06-26).
  INC-3 Mon 2026-08-03 08:00  no impact mark; role 08:30; contained 09:00; resolved 10:00, reopened 10:20,
        resolved 11:00. TTD —, TTA 30m, TTC 1h (first containment), TTR 3h (the last resolve).
        No postmortem, due 08-17: missing.
  INC-4 Tue 2026-09-01 20:00  impact 19:00; no role; contained 20:30; still contained.
        TTD 1h, TTA —, TTC 30m, TTR —. Not resolved: no postmortem expected.
  INC-5 Wed 2026-09-16 10:00  no impact mark; role 10:10; straight to resolved 10:40.
        TTD —, TTA 10m, TTC 40m, TTR 40m. Postmortem Wed 09-30 23:00 = exactly 10 business days: on time.

  2026-Q2 (INC-1, 2): TTD 20,30 -> 25m/25m; TTA 5,40 -> 22m30s; TTC 45,120 -> 1h22m30s; TTR 120,240 -> 3h.
  2026-Q3 (INC-3, 4, 5): TTD 60 (1 of 3); TTA 30,10 -> 20m (2 of 3); TTC 60,30,40 -> mean 43m20s, median 40m;
           TTR 180,40 -> 1h50m (2 of 3).
  All five: TTD 20,30,60 -> mean 36m40s, median 30m (3 of 5); TTA 5,40,30,10 -> mean 21m15s, median 20m (4 of 5);
            TTC 45,120,60,30,40 -> mean 59m, median 45m; TTR 120,240,180,40 -> mean 2h25m, median 2h30m (4 of 5).
  Postmortems: 4 resolved, 2 on time, 1 late, 1 missing -> 50% (Q2 1/2, Q3 1/2).

Corrective actions of real incidents:
  INC-1 A1 due 05-20 done 05-19: on time;  INC-1 A2 due 05-20 done 05-20 23:30: on time (same UTC day)
  INC-2 A1 due 06-20 done 06-25: late;     INC-3 A1 due 09-01 open: overdue
  INC-3 A2 due 2099-01-01 open: not yet due;  INC-5 A1 due 10-01 verified 09-28: on time
  -> on time 3, late 1, overdue 1, not yet due 1; rate 3 / (3 + 1 + 1) = 60%. Q2 2/3 (67%), Q3 1/2 (50%).

Drills (INC-6..9, is_drill): INC-6 is also a full incident that would wreck every mean if counted
(TTD 48h, TTA 10h, TTC 20h, TTR 30h, no postmortem, an overdue action).
  prompt-injection-tool-misuse: INC-6 08-10 14/20 = 70%, INC-7 09-20 18/20 = 90% -> mean 80%
  retrieval-leakage: INC-8 09-05 9/12 = 75%;  bias-after-refresh: INC-9 10-01 still running, left out.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time as clock
from datetime import date, datetime, timedelta, timezone

import pytest
from PIL import Image

from bot import export, postmortem, readiness
from bot.models import CorrectiveAction, Drill, Incident, RoleAssignment, TimelineEntry
from tests.conftest import BACKENDS, REPO_ROOT, fresh_database

NOW = datetime(2026, 10, 15, 12, 0, tzinfo=timezone.utc)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def minutes(count: float) -> timedelta:
    return timedelta(minutes=count)


def add_incident(session, number: int, title: str, declared: str, *, is_drill: bool = False,
                 impact: str | None = None, detected: str | None = None, roles: tuple = (),
                 statuses: tuple = (), postmortem_done: str | None = None) -> Incident:
    """An incident with its declaration, role assignments and status moves in the timeline, the way
    the services write them (`statuses` are (time, old, new))."""
    status = statuses[-1][2] if statuses else "investigating"
    incident = Incident(
        number=number, title=title, severity=2, status=status, declared_by="U0ALICE", declared_at=at(declared),
        resolved_at=at(statuses[-1][0]) if status == "resolved" else None, is_drill=is_drill,
        impact_started_at=at(impact) if impact else None, detected_at=at(detected) if detected else None,
        postmortem_completed_at=at(postmortem_done) if postmortem_done else None,
        channel_id=f"C0ROOM{number}", channel_name=f"{'drill' if is_drill else 'inc'}-{number}",
    )
    session.add(incident)
    session.flush()
    entries = [TimelineEntry(incident_id=incident.id, kind="declared", actor_id="U0ALICE", text=title,
                             new_value="sev2", occurred_at=at(declared), recorded_at=at(declared))]
    for when, role, user in roles:
        session.add(RoleAssignment(incident_id=incident.id, role=role, user_id=user, assigned_by="U0ALICE",
                                   assigned_at=at(when)))
        entries.append(TimelineEntry(incident_id=incident.id, kind="role", actor_id="U0ALICE", text=role,
                                     new_value=user, source_ref=role, occurred_at=at(when), recorded_at=at(when)))
    for when, old, new in statuses:
        entries.append(TimelineEntry(incident_id=incident.id, kind="status", actor_id="U0BOB", old_value=old,
                                     new_value=new, occurred_at=at(when), recorded_at=at(when)))
        # Noise the measures must ignore.
        entries.append(TimelineEntry(incident_id=incident.id, kind="note", actor_id="U0BOB", text=f"now {new}",
                                     occurred_at=at(when), recorded_at=at(when)))
    session.add_all(entries)
    session.flush()
    return incident


def add_action(session, incident: Incident, number: int, due: str, *, done: str | None = None,
               verified: str | None = None) -> None:
    created = incident.declared_at + timedelta(hours=3)
    session.add(CorrectiveAction(
        incident_id=incident.id, number=number, text=f"Fix {number} of {incident.reference}", owner_id="U0CAROL",
        due_on=date.fromisoformat(due), verification="eval suite green", created_by="U0ALICE", created_at=created,
        remind_before_at=created, remind_due_at=created, done_at=at(done) if done else None,
        done_by="U0CAROL" if done else None, verified_at=at(verified) if verified else None,
        verified_by="U0ALICE" if verified else None))


def add_drill(session, incident: Incident, scenario: str, family: str, started: str, ended: str | None,
              score: int | None = None, max_score: int | None = None) -> None:
    session.add(Drill(incident_id=incident.id, scenario=scenario, family=family, facilitator_id="U0DAVE",
                      script="{}", started_at=at(started), ended_at=at(ended) if ended else None,
                      ended_by="U0DAVE" if ended else None, score=score, max_score=max_score,
                      scorecard="{}" if ended else None))


def seed(database) -> None:
    with database.sessions.begin() as session:
        inc1 = add_incident(session, 1, "Support bot quoting a refund policy we don't have", "2026-05-07 10:00",
                            impact="2026-05-07 09:40", roles=[("2026-05-07 10:05", "ic", "U0BOB")],
                            statuses=[("2026-05-07 10:45", "investigating", "contained"),
                                      ("2026-05-07 12:00", "contained", "resolved")],
                            postmortem_done="2026-05-12 09:00")
        inc2 = add_incident(session, 2, "Summaries | leaking <tenant> names", "2026-06-12 14:00",
                            detected="2026-06-12 13:30", impact="2026-06-12 13:00",
                            roles=[("2026-06-12 14:10", "ic", "U0BOB"), ("2026-06-12 14:20", "scribe", "U0CAROL")],
                            statuses=[("2026-06-12 15:30", "investigating", "monitoring"),
                                      ("2026-06-12 17:30", "monitoring", "resolved")],
                            postmortem_done="2026-06-30 10:00")
        inc3 = add_incident(session, 3, "Classifier drift after the model refresh", "2026-08-03 08:00",
                            roles=[("2026-08-03 08:30", "ic", "U0BOB")],
                            statuses=[("2026-08-03 09:00", "investigating", "contained"),
                                      ("2026-08-03 10:00", "contained", "resolved"),
                                      ("2026-08-03 10:20", "resolved", "investigating"),
                                      ("2026-08-03 11:00", "investigating", "resolved")])
        add_incident(session, 4, "Agent calling the refunds tool unprompted", "2026-09-01 20:00",
                     impact="2026-09-01 19:00", statuses=[("2026-09-01 20:30", "investigating", "contained")])
        inc5 = add_incident(session, 5, "Refusals up 40% on the medical assistant", "2026-09-16 10:00",
                            roles=[("2026-09-16 10:10", "ic", "U0BOB")],
                            statuses=[("2026-09-16 10:40", "investigating", "resolved")],
                            postmortem_done="2026-09-30 23:00")
        # The drill incident: counted, it would move every number above.
        inc6 = add_incident(session, 6, "DRILL: tool misuse via injected ticket", "2026-08-10 09:00", is_drill=True,
                            impact="2026-08-08 09:00", roles=[("2026-08-10 19:00", "ic", "U0DAVE")],
                            statuses=[("2026-08-11 05:00", "investigating", "contained"),
                                      ("2026-08-11 15:00", "contained", "resolved")])
        inc7 = add_incident(session, 7, "DRILL: one-dollar car", "2026-09-20 10:00", is_drill=True,
                            statuses=[("2026-09-20 11:00", "investigating", "resolved")])
        inc8 = add_incident(session, 8, "DRILL: chat history exposed", "2026-09-05 10:00", is_drill=True,
                            statuses=[("2026-09-05 11:00", "investigating", "resolved")])
        inc9 = add_incident(session, 9, "DRILL: bias after refresh", "2026-10-01 10:00", is_drill=True)

        add_action(session, inc1, 1, "2026-05-20", done="2026-05-19 16:00")
        add_action(session, inc1, 2, "2026-05-20", done="2026-05-20 23:30")
        add_action(session, inc2, 1, "2026-06-20", done="2026-06-25 09:00")
        add_action(session, inc3, 1, "2026-09-01")
        add_action(session, inc3, 2, "2099-01-01")
        add_action(session, inc5, 1, "2026-10-01", done="2026-09-28 12:00", verified="2026-09-28 12:00")
        add_action(session, inc6, 1, "2026-08-15")  # a drill's overdue action: not counted

        add_drill(session, inc6, "prompt-injection-tool-misuse", "prompt-injection-tool-misuse",
                  "2026-08-10 09:00", "2026-08-10 10:00", 14, 20)
        add_drill(session, inc7, "aiid-622-dealer-chatbot-one-dollar", "prompt-injection-tool-misuse",
                  "2026-09-20 10:00", "2026-09-20 11:00", 18, 20)
        add_drill(session, inc8, "aiid-516-chat-history-exposed", "retrieval-leakage",
                  "2026-09-05 10:00", "2026-09-05 11:00", 9, 12)
        add_drill(session, inc9, "bias-after-refresh", "bias-after-refresh", "2026-10-01 10:00", None)


@pytest.fixture(scope="module", params=BACKENDS)
def database(request, tmp_path_factory):
    with fresh_database(request.param, tmp_path_factory.mktemp(f"readiness-{request.param}")) as db:
        seed(db)
        yield db


def report(database, since: date | None = None, now: datetime = NOW) -> readiness.Readiness:
    with database.sessions() as session:
        return readiness.build_report(session, since, now)


def stat(count: int, mean: float, median: float) -> readiness.Stat:
    return readiness.Stat(count=count, mean=minutes(mean), median=minutes(median))


def test_response_times_by_quarter_count_real_incidents_only(database):
    r = report(database)
    assert [row.quarter for row in r.quarters] == ["2026-Q2", "2026-Q3"]
    q2, q3 = r.quarters
    assert q2.incidents == 2 and q3.incidents == 3 and r.overall.incidents == 5  # not the 4 drill incidents
    assert q2.times == {"detect": stat(2, 25, 25), "acknowledge": stat(2, 22.5, 22.5),
                        "contain": stat(2, 82.5, 82.5), "resolve": stat(2, 180, 180)}
    assert q3.times == {"detect": stat(1, 60, 60), "acknowledge": stat(2, 20, 20),
                        "contain": stat(3, 130 / 3, 40), "resolve": stat(2, 110, 110)}
    assert r.overall.times == {"detect": stat(3, 110 / 3, 30), "acknowledge": stat(4, 21.25, 20),
                               "contain": stat(5, 59, 45), "resolve": stat(4, 145, 150)}
    # Counted, the drill (TTD 48h) would have made Q3's mean time to detect (60 + 2880) / 2 minutes.
    assert r.drill_incidents_left_out == 4
    assert q3.times["contain"].cell(3) == "43m 20s / 40m 00s"
    assert q3.times["detect"].cell(3) == "1h 00m 00s / 1h 00m 00s (1 of 3)"
    assert readiness.Stat().cell(3) == "—"


def test_times_are_the_postmortems_own(database):
    """The batched read gives each incident exactly the milestones its postmortem draft shows."""
    with database.sessions() as session:
        from sqlalchemy import select

        incidents = list(session.scalars(select(Incident).order_by(Incident.number)))
        batched = readiness.incident_milestones(session, incidents)
        for incident in incidents:
            assert batched[incident.id] == postmortem.milestones(export.read_record(session, incident_id=incident.id))
        assert batched[incidents[2].id].time_to_resolve == minutes(180)  # INC-3: the last resolve counts


def test_postmortems_within_ten_business_days(database):
    r = report(database)
    lines = {line.reference: line for line in r.postmortems}
    assert list(lines) == ["INC-1", "INC-2", "INC-3", "INC-5"]  # resolved real incidents, by resolution
    assert (lines["INC-1"].state, lines["INC-1"].business_days, lines["INC-1"].due_on) == \
        ("on time", 3, date(2026, 5, 21))
    assert (lines["INC-2"].state, lines["INC-2"].business_days, lines["INC-2"].due_on) == \
        ("late", 12, date(2026, 6, 26))
    assert (lines["INC-3"].state, lines["INC-3"].business_days, lines["INC-3"].due_on) == \
        ("missing", None, date(2026, 8, 17))
    assert (lines["INC-5"].state, lines["INC-5"].business_days, lines["INC-5"].due_on) == \
        ("on time", 10, date(2026, 9, 30))
    pm = r.overall.postmortems
    assert (pm.resolved, pm.on_time, pm.late, pm.missing, pm.pending, pm.rate) == (4, 2, 1, 1, 0, 0.5)
    assert [row.postmortems.rate for row in r.quarters] == [0.5, 0.5]
    assert [line.reference for line in r.late_postmortems] == ["INC-2", "INC-3"]
    # On the day INC-3 was resolved its postmortem was not missing yet, only pending.
    early = report(database, since=date(2026, 8, 1), now=at("2026-08-05 12:00"))
    assert {line.reference: line.state for line in early.postmortems}["INC-3"] == "pending"


def test_corrective_actions_on_time(database):
    r = report(database)
    states = {line.reference: line.state for line in r.actions}
    assert states == {"INC-1 A1": "on time", "INC-1 A2": "on time", "INC-2 A1": "late", "INC-3 A1": "overdue",
                      "INC-3 A2": "not yet due", "INC-5 A1": "on time"}  # INC-6 (a drill) left out
    counts = r.overall.actions
    assert (counts.on_time, counts.late, counts.overdue, counts.not_yet_due, counts.rate) == (3, 1, 1, 1, 0.6)
    q2, q3 = (row.actions for row in r.quarters)
    assert (q2.on_time, q2.late, q2.overdue, q2.rate) == (2, 1, 0, pytest.approx(2 / 3))
    assert (q3.on_time, q3.overdue, q3.not_yet_due, q3.rate) == (1, 1, 1, 0.5)
    assert [line.reference for line in r.late_actions] == ["INC-2 A1", "INC-3 A1"]


def test_drill_scores_by_family(database):
    r = report(database)
    assert [family.family for family in r.drills] == ["prompt-injection-tool-misuse", "retrieval-leakage"]
    injection, leakage = r.drills
    assert [(p.reference, p.score, p.max_score, p.percent) for p in injection.drills] == \
        [("INC-6", 14, 20, 70.0), ("INC-7", 18, 20, 90.0)]
    assert injection.mean_percent == 80.0
    assert [(p.reference, p.percent) for p in leakage.drills] == [("INC-8", 75.0)]
    assert r.drills_running == 1  # INC-9 has not ended: not scored, not shown


def test_since_filters_incidents_by_declaration_and_drills_by_start(database):
    r = report(database, since=date(2026, 9, 1))
    # INC-4 was declared on 2026-09-01 itself (20:00): included. INC-3 (August) is not.
    assert [row.quarter for row in r.quarters] == ["2026-Q3"] and r.overall.incidents == 2
    assert r.overall.times == {"detect": stat(1, 60, 60), "acknowledge": stat(1, 10, 10),
                               "contain": stat(2, 35, 35), "resolve": stat(1, 40, 40)}
    assert [line.reference for line in r.postmortems] == ["INC-5"] and r.overall.postmortems.rate == 1.0
    assert [line.reference for line in r.actions] == ["INC-5 A1"] and r.overall.actions.rate == 1.0
    assert [(f.family, [p.reference for p in f.drills]) for f in r.drills] == \
        [("prompt-injection-tool-misuse", ["INC-7"]), ("retrieval-leakage", ["INC-8"])]
    assert r.drill_incidents_left_out == 3  # INC-7, 8, 9

    empty = report(database, since=date(2027, 1, 1))
    assert empty.quarters == [] and empty.overall.incidents == 0 and empty.drills == []


def test_calendar_helpers():
    thursday = date(2026, 5, 7)
    assert readiness.business_days_between(thursday, date(2026, 5, 12)) == 3  # Fri, Mon, Tue
    assert readiness.business_days_between(date(2026, 5, 9), date(2026, 5, 11)) == 1  # Sat -> Mon
    assert readiness.add_business_days(date(2026, 5, 9), 1) == date(2026, 5, 11)
    assert readiness.add_business_days(thursday, 10) == date(2026, 5, 21)
    assert readiness.quarters_between("2025-Q4", "2026-Q2") == ["2025-Q4", "2026-Q1", "2026-Q2"]
    assert readiness.quarter_of(datetime(2026, 3, 31, 23, 30, tzinfo=timezone(timedelta(hours=-2)))) == "2026-Q2"


def cli_env(database) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SLACK_", "WARROOM_"))}
    return {**env, "DATABASE_URL": database.url}


def warroom(*args, env):
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


def check_png(path, min_colours: int) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        image.load()
        assert image.size == (1500, 1950)  # 10 x 13 inches at 150 dpi
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert len(colours) >= min_colours  # text, bars and lines drawn, not a blank canvas


def test_cli_writes_the_report_and_its_chart(database, tmp_path):
    started = clock.monotonic()
    out = tmp_path / "report"
    result = warroom("readiness", "--output", str(out), env=cli_env(database))
    assert result.returncode == 0, result.stderr
    md_path, png_path = out / "readiness.md", out / "readiness.png"
    assert result.stdout.split() == [str(md_path), str(png_path)]
    check_png(png_path, min_colours=50)

    md = md_path.read_text(encoding="utf-8")
    assert md.startswith("# Readiness: all time to ")
    assert "![Readiness](readiness.png)" in md
    assert "4 drill incidents in the period are left out of every incident measure" in md
    assert ("| 2026-Q2 | 2 | 25m 00s / 25m 00s | 22m 30s / 22m 30s | 1h 22m 30s / 1h 22m 30s "
            "| 3h 00m 00s / 3h 00m 00s |") in md
    assert ("| 2026-Q3 | 3 | 1h 00m 00s / 1h 00m 00s (1 of 3) | 20m 00s / 20m 00s (2 of 3) | 43m 20s / 40m 00s "
            "| 1h 50m 00s / 1h 50m 00s (2 of 3) |") in md
    assert ("| **All** | 5 | 36m 40s / 30m 00s (3 of 5) | 21m 15s / 20m 00s (4 of 5) | 59m 00s / 45m 00s "
            "| 2h 25m 00s / 2h 30m 00s (4 of 5) |") in md
    assert "2 of 4 resolved real incidents had the postmortem completed within 10 business days of resolving: **50%**" in md
    assert ("| INC-2 | Summaries \\| leaking &lt;tenant&gt; names | 2026-06-12 17:30:00 UTC | 2026-06-26 "
            "| 2026-06-30 10:00:00 UTC | 12 | late |") in md
    assert "| INC-3 | Classifier drift after the model refresh | 2026-08-03 11:00:00 UTC | 2026-08-17 | — | — | missing |" in md
    assert "| INC-1 |" not in md.split("## Postmortems")[1].split("## Corrective actions")[0]  # on time: not listed
    assert "6 corrective actions of real incidents: **60%** closed on time" in md
    assert "| **All** | 3 | 1 | 1 | 1 | 60% |" in md and "| 2026-Q2 | 2 | 1 | 0 | 0 | 67% |" in md
    assert "| INC-3 A1 | Classifier drift after the model refresh | Fix 1 of INC-3 | U0CAROL | 2026-09-01 | — | overdue |" in md
    assert "| prompt-injection-tool-misuse | 2 | 80% |" in md and "| retrieval-leakage | 1 | 75% |" in md
    assert "| retrieval-leakage | 2026-09-05 10:00:00 UTC | INC-8 | aiid-516-chat-history-exposed | 9/12 | 75% |" in md
    assert "1 drill still running left out" in md
    assert "DRILL:" not in md and "INC-6 A1" not in md  # the drill incident is nowhere in the incident parts
    assert "no holiday calendar" in md
    print(f"warroom readiness took {clock.monotonic() - started:.1f}s")


def test_cli_since(database, tmp_path):
    result = warroom("readiness", "--since", "2026-09-01", "--output", str(tmp_path), env=cli_env(database))
    assert result.returncode == 0, result.stderr
    md = (tmp_path / "readiness.md").read_text(encoding="utf-8")
    assert md.startswith("# Readiness: 2026-09-01 to ")
    assert "| **All** | 2 | 1h 00m 00s / 1h 00m 00s (1 of 2) |" in md and "2026-Q2" not in md
    assert "INC-3" not in md and "INC-6" not in md and "| INC-7 |" in md


def test_an_empty_period_still_makes_a_report_and_a_chart(database, tmp_path):
    md_path, png_path = readiness.write_report(report(database, since=date(2030, 1, 1)), tmp_path / "empty")
    md = md_path.read_text(encoding="utf-8")
    assert md.startswith("# Readiness: 2030-01-01 to 2026-10-15")
    assert "| **All** | 0 | — | — | — | — |" in md
    assert "_No real incident was resolved in the period._" in md and "_No drill ended in the period._" in md
    check_png(png_path, min_colours=5)  # the placeholders ("no real incidents yet")


def test_cli_refuses_a_bad_date(tmp_path):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'never.db'}"}
    result = warroom("readiness", "--since", "2026-13-01", "--output", str(tmp_path / "out"), env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "warroom: '2026-13-01' is not a date; write YYYY-MM-DD"
    assert not (tmp_path / "out").exists() and not (tmp_path / "never.db").exists()


@pytest.mark.parametrize("bad", ["2026-02-30", "yesterday", "20260101", "2026-1-5"])
def test_only_yyyy_mm_dd_is_a_date(bad, tmp_path, capsys):
    from argparse import Namespace

    from bot import cli

    assert cli.cmd_readiness(Namespace(since=bad, output=str(tmp_path / "out"))) == 2
    assert capsys.readouterr().err == f"warroom: '{bad}' is not a date; write YYYY-MM-DD\n"
    assert not (tmp_path / "out").exists()
