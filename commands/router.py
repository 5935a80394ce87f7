"""The `/incident` slash command: route the subcommand, ack after the write, then talk to Slack.

Every subcommand handler parses, commits through one service call, and returns a `Reply`: what
the ack tells the person, and the slower Slack work to do after the ack. Errors are handled here,
once: a domain error becomes an ephemeral message that says what to type instead.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Hashable

from slack_bolt import App
from slack_sdk import WebClient
from sqlalchemy import select
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from bot import observability
from bot.errors import UsageError, WarroomError
from bot.models import Incident
from bot.render import render
from bot.runtime import AlreadyHandled, CommitOutcomeUnknown, DeliveryInProgress, Runtime, is_lock_timeout
from bot.slack_io import SlackCallFailed
from commands.parsing import USAGE, split_subcommand

log = logging.getLogger(__name__)

DATABASE_DOWN = ("Could not record this: the incident database is not answering. Nothing was saved; "
                 "try again in a moment.")
IN_PROGRESS = ("This command reached the bot twice and the first copy is still being carried out; it will show "
               "in the room when it is done. If it does not appear within a minute, run it again.")
DATABASE_BUSY = ("Could not record this: the incident database is busy with other commands. Nothing was saved; "
                 "try again in a moment.")
OUTCOME_UNKNOWN = ("The incident database stopped answering while saving this, so it may or may not be recorded. "
                   "Check `/incident timeline` before trying again.")
ALREADY_HANDLED = "This command reached the bot twice; it was carried out once, the first time."
INTERNAL_ERROR = ("Could not record this: the bot hit an internal error (it is in the bot's log). Nothing was saved; "
                  "try again, and tell whoever runs Warroom if it happens again.")


def delivery_key(request: SlashRequest) -> str | None:
    """The key a repeated delivery of this command is recognised by (its trigger id, hashed to fit)."""
    if not request.trigger_id:
        return None
    return "trigger:" + hashlib.sha256(request.trigger_id.encode()).hexdigest()[:40]


# PostgreSQL's SQLSTATEs for a transaction undone because it collided with another: deadlock_detected,
# serialization_failure. Nothing was saved, and the same command again will most likely go through.
CONFLICT_SQLSTATES = {"40P01", "40001"}


def database_failure(exc: SQLAlchemyError) -> str:
    """What to tell a person whose command the database refused: it is busy, down, or our bug."""
    if isinstance(exc, PoolTimeout) or (isinstance(exc, OperationalError) and is_lock_timeout(exc)):
        return DATABASE_BUSY  # a lock or the connection pool waited longer than Slack would
    if isinstance(exc, OperationalError) and getattr(exc.orig, "sqlstate", None) in CONFLICT_SQLSTATES:
        return DATABASE_BUSY  # PostgreSQL broke a deadlock or a serialization conflict by undoing ours
    if isinstance(exc, (OperationalError, InterfaceError)):
        return DATABASE_DOWN
    return INTERNAL_ERROR


@dataclass(frozen=True)
class SlashRequest:
    """One `/incident …` invocation as Slack sent it."""

    user_id: str
    channel_id: str
    subcommand: str
    args: str
    trigger_id: str


@dataclass(frozen=True)
class Joinable:
    """After-ack work that is done in one go with the like work of the replies queued right behind it
    in the same room: notes typed in a burst while Slack is busy with the room's last post become one
    message. Slack takes about one message a second a channel, and under load each post is CPU that
    the next person's ack waits for."""

    kind: Hashable  # work joins only work of the same kind (and so the same room)
    item: object  # this reply's part of the work
    do: Callable[[WebClient, list], None]  # does the parts of the joined replies, in the order acknowledged
    # Whether this process is still the one to do a part when its turn comes; a part it is not is
    # neither done nor told about (e.g. a post past the time another process takes over).
    still_ours: Callable[[object], bool] = lambda item: True


@dataclass
class Reply:
    """What to acknowledge with (ephemeral; nothing if empty) and the Slack work that follows."""

    text: str = ""
    blocks: list | None = None
    then: Callable[[WebClient], None] | None = None
    # The Slack work that follows, when it may be joined with the like work queued behind it (then
    # `then` is None).
    joinable: Joinable | None = None
    # Said to the person if the work after the ack fails; the failing step and Slack's error are appended.
    then_failure: str = "Your command was recorded, but"
    # Whose queue `then` waits in (AfterAckWork), when not the room the command came from: a
    # declaration's work opens a room of its own and need not wait for anything in the channel
    # it was typed in.
    room: str | None = None


Handler = Callable[[SlashRequest], Reply]


# Threads that do the Slack work after acks (posting, opening rooms), apart from Bolt's listener
# threads: a post waits on Slack (~100 ms from a host far from it, seconds under rate limits), and
# a listener thread held by one is one fewer to ack with. With the work on the listener threads,
# a 100 ms post made 8 people's acks 14x the bare app's (benchmarks/ack_latency.py --slack-latency).
AFTER_ACK_THREADS = 8


# The most replies' work done in one go (Joinable): ten notes of the longest kind (2,500 characters)
# fill 27,000 of a Slack message's 40,000 characters and 20 of its 50 blocks.
JOINED_AT_MOST = 10

# A room whose last timeline entry post started less than this long ago waits it out before posting
# the next ones, or until a message-worth is queued: a burst of notes from several people (or a
# script) reaches the room as a few full messages, not one each. Slack takes about one message a
# second a channel, more only in short bursts; and each post costs this process about 0.6 ms of CPU
# that the acks queue behind (benchmarks/command_cpu.py): at 8 clients typing into one room, about
# 800 posts for 2,060 notes became about 210 and the bot's CPU a command fell by a tenth
# (benchmarks/ack_latency.py). A note in a quiet room, or behind a post Slack took this long over,
# is posted at once; a tenth of a second more in a burst is less than Slack takes to show a message.
JOIN_WAIT = 0.1
# Rooms whose last joined post is remembered before those past JOIN_WAIT are forgotten.
ROOMS_REMEMBERED = 1024


@dataclass
class _Job:
    context: contextvars.Context  # the submitter's: the work's log lines keep the command's request id
    run: Callable[[list], None]  # called with the items of this job and of those joined to it
    item: object = None
    join_kind: Hashable | None = None  # None: never joined


class AfterAckWork:
    """The after-ack threads, doing one room's work at a time and in the order it was acknowledged.

    Two notes typed back to back must reach the room as the timeline has them; on threads of their
    own, the second's post overtook the first's whenever Slack took longer over the first. So each
    room's work waits for the room's previous work, while other rooms' work runs beside it (Slack
    allows a channel about one message a second anyway, so one room never needs more than a thread).
    Joinable work queued back to back in a room is done in one go when its turn comes, and waits for
    more to join it while the room's last joinable work began less than JOIN_WAIT ago.
    """

    def __init__(self, threads: int = AFTER_ACK_THREADS, join_wait: float = JOIN_WAIT) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="after-ack")
        self._lock = threading.Lock()
        self._more_queued = threading.Condition(self._lock)  # for a room waiting to join (JOIN_WAIT)
        self._queued: dict[str, deque[_Job]] = {}  # room -> its work not yet started, while a thread has the room
        self._join_wait = join_wait
        self._joined_work_started: dict[str, float] = {}  # room -> when its last joinable work began (monotonic)

    def submit(self, room: str, work: Callable[[], None]) -> None:
        self._enqueue(room, _Job(contextvars.copy_context(), lambda _items: work()))

    def submit_joinable(self, room: str, kind: Hashable, item: object, work: Callable[[list], None]) -> None:
        """Queue `work` for `item`; done with the items of the same kind queued right behind it, if any."""
        self._enqueue(room, _Job(contextvars.copy_context(), work, item, kind))

    def _enqueue(self, room: str, job: _Job) -> None:
        with self._lock:
            if room in self._queued:
                self._queued[room].append(job)
                self._more_queued.notify_all()
                return
            self._queued[room] = deque([job])
        self._pool.submit(self._work_through, room)

    def _work_through(self, room: str) -> None:
        while True:
            with self._lock:
                queued = self._queued[room]
                if not queued:
                    del self._queued[room]
                    return
                kind = queued[0].join_kind
                if kind is not None:
                    self._wait_to_join(room, queued)
                jobs = [queued.popleft()]
                while kind is not None and queued and queued[0].join_kind == kind and len(jobs) < JOINED_AT_MOST:
                    jobs.append(queued.popleft())
                if kind is not None:
                    self._joined_work_starts(room)
            try:
                jobs[0].context.run(jobs[0].run, [job.item for job in jobs])
            except Exception:  # noqa: BLE001 - the room's later work still runs
                log.exception("after-ack work failed and the person could not be told")

    def _wait_to_join(self, room: str, queued: deque[_Job]) -> None:
        """Holding the lock, with joinable work at the head of `room`'s queue: wait until JOIN_WAIT has
        passed since the room's last joinable work began, unless a message-worth is queued or other
        work is queued behind (nothing more could join it)."""
        started = self._joined_work_started.get(room)
        if started is None:
            return
        kind = queued[0].join_kind
        while len(queued) < JOINED_AT_MOST and all(job.join_kind == kind for job in queued):
            left = started + self._join_wait - time.monotonic()
            if left <= 0:
                return
            self._more_queued.wait(left)

    def _joined_work_starts(self, room: str) -> None:
        """Holding the lock: remember when `room`'s joinable work began, for its next (_wait_to_join)."""
        now = time.monotonic()
        if len(self._joined_work_started) >= ROOMS_REMEMBERED:  # forget the rooms whose wait is over
            self._joined_work_started = {name: began for name, began in self._joined_work_started.items()
                                         if now - began < self._join_wait}
        self._joined_work_started[room] = now


@dataclass
class Router:
    runtime: Runtime
    handlers: dict[str, Handler] = field(default_factory=dict)
    after_ack_work: AfterAckWork = field(default_factory=AfterAckWork)

    def after_ack(self, reply: Reply, client: WebClient, tell: Callable[[str], object],
                  room: str | None = None) -> None:
        """Queue the reply's Slack work (`run_after_ack`) behind the earlier work of its room (`reply.room`,
        else `room`, where the command came from); returns at once."""
        if reply.then is None and reply.joinable is None:
            return
        queue = reply.room or room
        assert queue, "after-ack work needs the room whose order it keeps"
        if reply.joinable is not None:
            self.after_ack_work.submit_joinable(queue, reply.joinable.kind, (reply, tell),
                                                partial(run_joined_after_ack, client=client))
        else:
            self.after_ack_work.submit(queue, lambda: run_after_ack(reply, client, tell))

    def add(self, name: str, handler: Handler) -> None:
        assert name in USAGE, f"document {name} in commands.parsing.USAGE"
        self.handlers[name] = handler

    def dispatch(self, request: SlashRequest) -> Reply:
        handler = self.handlers.get(request.subcommand)
        if handler is None:
            raise UsageError(
                f"`{request.subcommand}` is not an /incident command.",
                "Try `/incident help` for the list, e.g. `/incident declare sev2 <title>`.",
            )
        return handler(request)

    def _name_the_room_incident(self, channel_id: str) -> None:
        """When the handler read no incident (a refusal, help), the log line still names the room's:
        one indexed read, after the ack. Loading the row names it (see bot.observability)."""
        scope = observability.current_scope()
        if scope is None or scope.incident or scope.several_incidents:
            return
        try:
            with self.runtime.sessions() as session:
                session.scalars(select(Incident).where(Incident.channel_id == channel_id)).first()
        except SQLAlchemyError:
            log.debug("could not look up the incident of %s", channel_id, exc_info=True)

    def register(self, app: App) -> None:
        @app.command("/incident")
        def handle_incident_command(ack, command, client, respond):
            started = time.perf_counter()
            if not isinstance(command.get("user_id"), str) or not isinstance(command.get("channel_id"), str):
                # Slack always sends both; a request without them is malformed, and nothing is done.
                log.warning("refused a slash command without a user or channel id")
                ack(text="This request did not say who sent it or from which channel, so nothing was done.")
                return
            subcommand, args = split_subcommand(str(command.get("text") or ""))
            request = SlashRequest(
                user_id=command["user_id"],
                channel_id=command["channel_id"],
                subcommand=subcommand or "help",
                args=args,
                trigger_id=command.get("trigger_id", ""),
            )
            # What people type after /incident is unbounded: metrics and logs name only known subcommands.
            label = request.subcommand if request.subcommand in self.handlers else "unknown"

            def answer(outcome: str, **response) -> None:
                ack(**response)
                elapsed = observability.command_acked(label, outcome, started)
                if outcome in ("refused", "already_handled", "ok"):
                    self._name_the_room_incident(request.channel_id)
                log.info("/incident %s: %s, acknowledged in %.0f ms", label, outcome, elapsed * 1000)

            try:
                with self.runtime.handling(delivery_key(request)):
                    reply = self.dispatch(request)
            except AlreadyHandled:
                answer("already_handled", text=ALREADY_HANDLED)
                return
            except DeliveryInProgress:
                answer("in_progress", text=IN_PROGRESS)
                return
            except CommitOutcomeUnknown:
                log.exception("the database connection failed while committing /incident %s", label)
                answer("outcome_unknown", text=OUTCOME_UNKNOWN)
                return
            except WarroomError as exc:
                answer("refused", text=render("error.slack.j2", message=exc.message, hint=exc.hint))
                return
            except SQLAlchemyError as exc:
                log.exception("database error in /incident %s", label)
                failure = database_failure(exc)
                outcome = {DATABASE_DOWN: "database_down", DATABASE_BUSY: "busy"}.get(failure, "internal_error")
                answer(outcome, text=failure)
                return
            except Exception:  # noqa: BLE001 - a bug is told to the person and logged, not a Slack error page
                log.exception("internal error in /incident %s", label)
                answer("internal_error", text=INTERNAL_ERROR)
                return
            answer("ok", text=reply.text, blocks=reply.blocks)
            self.after_ack(reply, client, tell=lambda text: respond(text=text), room=request.channel_id)


def payload_fields(read: Callable[[], object]):
    """What a form submission or button click carries, as `read` takes it out of Slack's payload;
    None (and a log line) when the payload lacks what our forms put there: a malformed request."""
    try:
        return read()
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        log.warning("ignored an interaction without the fields our form sends (%s)", type(exc).__name__)
        return None


def run_after_ack(reply: Reply, client: WebClient, tell: Callable[[str], object]) -> None:
    """Do the slow Slack work; a failure is told to the person (`tell`), never swallowed."""
    if reply.then is not None:
        do_telling_failures(lambda: reply.then(client), [(reply, tell)])


def run_joined_after_ack(parts: list[tuple[Reply, Callable[[str], object]]], client: WebClient) -> None:
    """Do the joinable work of several replies in one go (`Joinable.do` of the first: they are all of
    its kind); a failure is told to each of their people."""
    parts = [(reply, tell) for reply, tell in parts if reply.joinable.still_ours(reply.joinable.item)]
    if parts:
        joined = parts[0][0].joinable
        do_telling_failures(lambda: joined.do(client, [reply.joinable.item for reply, _ in parts]), parts)


def do_telling_failures(work: Callable[[], None], parts: list[tuple[Reply, Callable[[str], object]]]) -> None:
    """Run `work`, the Slack work of the replies in `parts`; if it fails, each reply's person is told
    (its `then_failure` and what failed): never swallowed."""
    try:
        work()
        return
    except SlackCallFailed as exc:
        log.warning("after-ack Slack work failed: %s", exc)
        texts = [render("error.slack.j2", message=f"{reply.then_failure} {exc}.",
                        hint="Try again, or check that the bot is in the channel.") for reply, _ in parts]
    except SQLAlchemyError as exc:
        log.exception("database error after ack")
        texts = [database_failure(exc)] * len(parts)
    except Exception:  # noqa: BLE001 - our bug after the ack: told and logged, not a Slack error page
        log.exception("internal error after ack")
        texts = [render("error.slack.j2", message=f"{reply.then_failure} the bot hit an internal error (it is in "
                        "the bot's log).", hint="Tell whoever runs Warroom if it happens again.") for reply, _ in parts]
    for (_, tell), text in zip(parts, texts):
        try:
            tell(text)
        except Exception:  # noqa: BLE001 - the others are still told
            log.exception("after-ack work failed and the person could not be told")
