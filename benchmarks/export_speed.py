"""Benchmark: exporting a 10,000-entry timeline, against a plain `json.dumps` of the same rows.

Builds a fresh database (SQLite file or a throwaway PostgreSQL database) holding one incident with
N timeline entries of realistic kinds and text (non-ASCII included) and a few actions, then times,
best of `--repeat` runs each:

- baseline: read the same rows with one query and `json.dumps` them as plain dicts;
- each export format (md, json, csv) and the postmortem draft, from reading to finished text.

It prints the seconds and the ratio to the baseline. Run:

    .venv/bin/python -m benchmarks.export_speed --backend sqlite
    .venv/bin/python -m benchmarks.export_speed --backend postgresql --entries 10000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import insert, select

from bot import export, postmortem
from bot.models import CorrectiveAction, Incident, TimelineEntry
from tests.conftest import fresh_database

KINDS = ("decision", "note", "pinned", "status", "role", "update", "severity", "note", "decision", "reminder")
TEXTS = (
    "Roll back prompt template v14 to v13: the retrieval filter dropped the refund-policy index",
    "Résumé of tickets: 12 quote a 90-day refund; 東京 tenant most affected | see trace 5531",
    "Customer ticket #4411: the bot promised a refund we don't offer <https://example.com|link>",
    "Disable the refund tool until the evals pass; reversible; owner is the tech lead",
)


def build_incident(database, entries: int) -> int:
    start = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
    with database.engine.begin() as connection:
        incident_id = connection.execute(insert(Incident).returning(Incident.id), [{
            "number": 1, "title": "Support bot quoting a refund policy we don't have", "summary": "", "severity": 1,
            "status": "resolved", "declared_by": "U0ALICE", "declared_at": start,
            "impact_started_at": start - timedelta(minutes=40), "cadence_overridden": False,
        }]).scalar_one()
        rows = []
        for n in range(entries):
            kind = "declared" if n == 0 else KINDS[n % len(KINDS)]
            moment = start + timedelta(seconds=n * 3)
            rows.append({
                "incident_id": incident_id, "kind": kind, "actor_id": f"U0USER{n % 7}", "text": TEXTS[n % len(TEXTS)],
                "old_value": "investigating" if kind == "status" else None,
                "new_value": "contained" if kind == "status" else None, "occurred_at": moment,
                "recorded_at": moment, "source": "reaction" if kind == "pinned" else "command",
                "source_ref": "https://slack.example/archives/C1/p1" if kind == "pinned" else None,
            })
        for first in range(0, entries, 2000):
            connection.execute(insert(TimelineEntry), rows[first:first + 2000])
        connection.execute(insert(CorrectiveAction), [{
            "incident_id": incident_id, "number": n, "text": f"Corrective action {n}", "owner_id": "U0BOB",
            "due_on": date(2026, 12, n), "verification": "eval passes" if n % 2 else "", "created_by": "U0ALICE",
            "created_at": start, "remind_before_at": start, "remind_due_at": start, "verified_evidence": "",
        } for n in range(1, 6)])
    return incident_id


def baseline(database, incident_id: int) -> str:
    """What a hand-written export would do: one query, rows as dicts, json.dumps."""
    with database.sessions.begin() as session:
        rows = session.execute(select(*export.ENTRY_COLUMNS).where(TimelineEntry.incident_id == incident_id)
                               .order_by(TimelineEntry.occurred_at, TimelineEntry.id)).mappings().all()
    return json.dumps([dict(row) for row in rows], default=str, ensure_ascii=False)


def exported(database, incident_id: int, fmt: str) -> str:
    with database.sessions.begin() as session:
        record = export.read_record(session, incident_id=incident_id)
    now = datetime.now(timezone.utc)
    if fmt == "postmortem":
        return postmortem.render_postmortem(record, {}, now)
    return export.render_export(record, fmt, {}, now)


def best_of(repeat: int, work) -> tuple[float, int]:
    best, size = float("inf"), 0
    for _ in range(repeat):
        began = time.perf_counter()
        size = len(work())
        best = min(best, time.perf_counter() - began)
    return best, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with fresh_database(args.backend, Path(tempfile.mkdtemp(prefix="warroom-export-bench-"))) as database:
        incident_id = build_incident(database, args.entries)
        base, base_size = best_of(args.repeat, lambda: baseline(database, incident_id))
        print(f"{args.backend}, {args.entries} timeline entries, best of {args.repeat}")
        print(f"{'what':<22}{'seconds':>9}{'x json.dumps':>14}{'bytes':>12}")
        print(f"{'baseline json.dumps':<22}{base:>9.3f}{1:>14.2f}{base_size:>12}")
        for fmt in ("json", "csv", "md", "postmortem"):
            seconds, size = best_of(args.repeat, lambda fmt=fmt: exported(database, incident_id, fmt))
            print(f"{'export ' + fmt if fmt != 'postmortem' else 'postmortem draft':<22}{seconds:>9.3f}"
                  f"{seconds / base:>14.2f}{size:>12}")


if __name__ == "__main__":
    main()
