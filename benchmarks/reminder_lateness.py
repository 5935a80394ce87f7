"""Benchmark: how late are update reminders with 10,000 open incidents?

Starts the Slack stand-in, a fresh database (SQLite file or a throwaway PostgreSQL database) holding
N open incidents whose next update falls due spread evenly over a window, and one or more real
`warroom serve` processes ticking every `--tick`. When every reminder is delivered it prints the
lateness (delivered_at - due_at) percentiles. Run:

    .venv/bin/python -m benchmarks.reminder_lateness --backend sqlite
    .venv/bin/python -m benchmarks.reminder_lateness --backend postgresql --processes 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import insert, text

from bot.models import Incident
from bot.slack_standin.server import SlackStandIn
from tests.conftest import fresh_database, start_bot

DECLARER = "U0BOB"


def open_incidents(database, standin, count: int, first_due: datetime, window: float) -> None:
    """`count` open SEV1 incidents, each with its own war room, due evenly across `window` seconds."""
    channels = [standin.create_channel(f"bench-{n}", ["U0WARROOM", DECLARER])["id"] for n in range(count)]
    declared = datetime.now(timezone.utc)
    rows = [{
        "number": n + 1, "title": f"benchmark incident {n + 1}", "summary": "", "severity": 1,
        "status": "investigating", "declared_by": DECLARER, "declared_at": declared,
        "channel_id": channels[n], "channel_name": f"bench-{n}", "cadence_seconds": 900,
        "cadence_overridden": False,
        "next_update_due_at": first_due + timedelta(seconds=window * n / count),
        "escalate_at": first_due + timedelta(hours=1),  # measure reminders, not escalations
    } for n in range(count)]
    with database.engine.begin() as connection:
        for start in range(0, count, 1000):
            connection.execute(insert(Incident), rows[start:start + 1000])
        connection.execute(text("UPDATE counter SET value = :n WHERE name = 'incident'"), {"n": count})


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def run(backend: str, count: int, window: float, tick: int, processes: int) -> dict:
    standin = SlackStandIn().start()
    tmp = Path(tempfile.mkdtemp(prefix="warroom-bench-"))
    try:
        with fresh_database(backend, tmp) as database:
            bots = [start_bot(database, standin, tmp, name=f"bench-{i}", WARROOM_TICK=f"{tick}s")
                    for i in range(processes)]
            try:
                started = time.monotonic()
                open_incidents(database, standin, count, datetime.now(timezone.utc) + timedelta(seconds=5), window)
                setup = time.monotonic() - started
                deadline = time.monotonic() + window + 600
                while time.monotonic() < deadline:
                    done = database.scalar("SELECT count(*) FROM reminder WHERE outcome = 'posted'")
                    if done >= count:
                        break
                    time.sleep(1)
                rows = database.rows("SELECT due_at, delivered_at FROM reminder WHERE outcome = 'posted'")
            finally:
                for bot in bots:
                    bot.stop()
    finally:
        standin.stop()

    def seconds(value):
        value = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        return value.replace(tzinfo=timezone.utc).timestamp() if value.tzinfo is None else value.timestamp()

    lateness = [seconds(r["delivered_at"]) - seconds(r["due_at"]) for r in rows]
    return {
        "backend": backend, "incidents": count, "window_s": window, "tick_s": tick, "processes": processes,
        "delivered": len(lateness), "setup_s": round(setup, 1),
        "p50_s": round(statistics.median(lateness), 3), "p99_s": round(percentile(lateness, 0.99), 3),
        "max_s": round(max(lateness), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--incidents", type=int, default=10_000)
    parser.add_argument("--window", type=float, default=120.0, help="seconds over which the updates fall due")
    parser.add_argument("--tick", type=int, default=1, help="ticker interval in seconds")
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    result = run(args.backend, args.incidents, args.window, args.tick, args.processes)
    print(" | ".join(f"{key}={value}" for key, value in result.items()))


if __name__ == "__main__":
    main()
