"""SIGKILL of a `warroom serve` process while eight people type commands as fast as it answers.

Shown, on SQLite and on PostgreSQL: every command that was acknowledged is in the database,
exactly once (an ack is sent only after the write is committed, and a commit survives the
kill); nothing is written twice; a new process on the same database carries on serving
commands, and the update reminder owed to the incident is delivered by it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
import requests

from bot.slack_standin.simulator import SlackSimulator
from tests.conftest import SIGNING_SECRET, entry_keys_of, eventually, start_bot

ALICE, BOB = "U0ALICE", "U0BOB"
GENERAL = "C0GENERAL"
CLIENTS = 8
LOAD_SECONDS = 1.5
TICK = 1.0
CADENCE_SECONDS = 6  # falls due after the kill, so it is the restarted process that must deliver it
REPOST_AFTER = "2s"  # the successor takes over the victim's unposted notes this soon (2 minutes by default)


def said(result) -> str:
    """What the ack showed the person: Bolt answers plain text, or JSON when there are blocks."""
    return result.body if isinstance(result.body, str) else (result.body or {}).get("text", "")


def reminders(standin, channel) -> list[dict]:
    return [m for m in standin.messages(channel)
            if ((m.get("metadata") or {}).get("event_payload") or {}).get("key", "").startswith("update_due")]


@pytest.fixture
def database(own_database):
    return own_database


def send_notes(slack, channel, client: int, answers: list, stop: threading.Event) -> None:
    """One person sending notes back to back until the bot is gone; each answer is kept as
    (text, acknowledged)."""
    for i in range(10_000):
        if stop.is_set():
            return
        note = f"load c{client} n{i}"
        try:
            result = slack.command(BOB, channel, f"note {note}")
        except requests.ConnectionError:
            answers.append((note, False))  # cut off mid-request, or refused: not acknowledged
            return
        # A note's ack is empty; anything else (an error, a timeout) is not an acknowledgement.
        answers.append((note, result.status == 200 and said(result) == ""))


def test_every_acknowledged_command_survives_a_sigkill_and_a_new_process_carries_on(database, standin, tmp_path):
    victim = start_bot(database, standin, tmp_path, name="victim", WARROOM_TICK=f"{TICK:.0f}s")
    successor = None
    try:
        slack = SlackSimulator(standin, f"{victim.url}/slack/events", SIGNING_SECRET)
        declared = slack.command(ALICE, GENERAL, "declare sev3 Eval scores dropping after the prompt change")
        assert declared.status == 200 and "INC-1" in said(declared), declared.body
        channel = eventually(lambda: database.scalar("SELECT channel_id FROM incident WHERE number = 1"))
        eventually(lambda: standin.calls("conversations.setTopic"))
        assert slack.command(BOB, channel, f"cadence {CADENCE_SECONDS}s").status == 200

        answers: list[tuple[str, bool]] = []
        stop = threading.Event()
        clients = [threading.Thread(target=send_notes, args=(slack, channel, c, answers, stop)) for c in range(CLIENTS)]
        for client in clients:
            client.start()
        time.sleep(LOAD_SECONDS)  # the load runs for a while before the kill
        victim.process.kill()
        victim.process.wait(5)
        stop.set()
        for client in clients:
            client.join(10)
        assert not any(client.is_alive() for client in clients)

        acknowledged = [note for note, acked in answers if acked]
        unacknowledged = [note for note, acked in answers if not acked]
        recorded = Counter(row["text"] for row in database.rows(
            "SELECT text FROM timeline_entry WHERE kind = 'note'"))
        print(f"\n{database.backend}: {len(acknowledged)} notes acknowledged before the kill, "
              f"{len(unacknowledged)} cut off ({sum(recorded[n] for n in unacknowledged)} of those recorded)")
        assert len(acknowledged) >= CLIENTS  # there was real load
        assert [note for note in acknowledged if recorded[note] != 1] == []
        assert set(recorded.values()) == {1}  # nothing written twice
        assert set(recorded) <= {note for note, _ in answers}
        assert database.scalar("SELECT count(*) FROM reminder WHERE outcome = 'posted'") == 0

        successor = start_bot(database, standin, tmp_path, name="successor", WARROOM_TICK=f"{TICK:.0f}s",
                              WARROOM_REPOST_AFTER=REPOST_AFTER)
        slack = SlackSimulator(standin, f"{successor.url}/slack/events", SIGNING_SECRET)
        after = slack.command(BOB, channel, "note after the restart")
        assert after.status == 200 and said(after) == "", after.body
        assert database.scalar("SELECT count(*) FROM timeline_entry WHERE text = 'after the restart'") == 1

        # Reminders resume: the update owed to the incident is delivered, once, by the new process.
        [reminder] = eventually(lambda: reminders(standin, channel), timeout=CADENCE_SECONDS + 4 * TICK)
        assert f"(every {CADENCE_SECONDS}s)" in reminder["text"]
        [row] = eventually(lambda: database.rows(
            "SELECT claimed_by FROM reminder WHERE kind = 'update_due' AND outcome = 'posted'"))
        assert f":{successor.process.pid}:" in row["claimed_by"]

        # Every note is in the room exactly once: those the victim posted, and those it was killed
        # before posting, which the successor posts (or finds, if the victim's post got through).
        notes = [row["id"] for row in database.rows("SELECT id FROM timeline_entry WHERE kind = 'note'")]

        def every_note_posted():
            posted = Counter(key for message in standin.messages(channel) for key in entry_keys_of(message))
            return posted if all(posted[f"entry:{note}"] for note in notes) else None

        posted = eventually(every_note_posted, timeout=120, interval=0.5)
        assert {key: times for key, times in posted.items() if times != 1} == {}
        eventually(lambda: database.scalar("SELECT count(*) FROM timeline_entry WHERE awaiting_room_post") == 0)
        late = database.scalar("SELECT count(*) FROM reminder WHERE kind = 'room_post' AND outcome = 'posted'")
        print(f"{database.backend}: {late} notes left owed by the victim, each posted or found by the successor")
    finally:
        if victim.process.poll() is None:
            victim.process.kill()
        victim.stop()
        if successor is not None:
            successor.stop()
