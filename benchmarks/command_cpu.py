"""Benchmark: the CPU one `/incident decision|note` costs the bot, by part, next to a bare Bolt app.

benchmarks/ack_latency.py measures acks under load, where the CPU of everything on the machine
mixes (waitress, the clients, the stand-in, PostgreSQL). This one answers "where does a command's
CPU go": in this process, on one thread, it hands signed command bodies straight to the WSGI apps
(no HTTP server, no sockets on the bot's side but the post to the stand-in), with Bolt's listener
and the after-ack work run on the calling thread instead of their pools, so the thread's CPU clock
(`time.thread_time`) reads each command's cost:

- bare: a Bolt app built like the bot's whose only listener acks (benchmarks.ack_latency);
- bot: `bot.server.make_wsgi_app` around `make_bolt_app`, as `warroom serve` runs them, all of it:
  signature, Bolt, routing, the transaction, the ack, the log line, metrics, the post to the room;
- of which the transaction: the trigger id's claim and the entry, written together on the driver's
  own cursor (`Runtime.log_in_room_at_once`: one statement on PostgreSQL) once the room is known,
  else in `Runtime.transaction` (session, BEGIN, claim, entry, COMMIT);
- and the post: the after-ack work (render, slack_sdk's chat.postMessage to the stand-in);
- the rest: Slack's signature, Bolt, routing and parsing, the ack, the log line and metrics.

The stand-in answers in threads of its own; their CPU is not counted. Each figure is the median of
`--repeats` passes of `--commands` commands after a warm-up. Run:

    .venv/bin/python -m benchmarks.command_cpu
    .venv/bin/python -m benchmarks.command_cpu --backends sqlite --commands 2000
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from pathlib import Path

from slack_bolt.adapter.wsgi import SlackRequestHandler

from benchmarks.ack_latency import Commands, bare_bolt_app, throwaway_database
from bot.playbook import load_playbook
from bot.server import EVENTS_PATH
from bot.slack_standin.server import BOT_USER_ID, SlackStandIn
from bot.slack_standin.simulator import FORM, SLACK_USER_AGENT, sign
from tests.conftest import BOT_TOKEN, SIGNING_SECRET, bot_environment, open_incident

WARMUP = 200


class OnThisThread(Executor):
    """Runs what is submitted at once, on the submitting thread (in a copy of its context, as the
    bot's pools do), so its CPU is that thread's."""

    def __init__(self, *_args, **_kwargs) -> None:
        pass

    def submit(self, fn, /, *args, **kwargs) -> Future:
        import contextvars

        from bot import observability

        done: Future = Future()
        try:
            done.set_result(contextvars.copy_context().run(observability._run_listener, fn, *args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - kept in the future, as a pool would
            done.set_exception(exc)
        return done


def call(wsgi_app, body: str) -> None:
    """One signed POST /slack/events, as waitress would hand it over; anything but an empty 200 fails."""
    timestamp, raw = str(int(time.time())), body.encode()
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": EVENTS_PATH, "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http", "CONTENT_TYPE": FORM,
        "CONTENT_LENGTH": str(len(raw)), "wsgi.input": io.BytesIO(raw), "HTTP_USER_AGENT": SLACK_USER_AGENT,
        "HTTP_X_SLACK_REQUEST_TIMESTAMP": timestamp, "HTTP_X_SLACK_SIGNATURE": sign(SIGNING_SECRET, timestamp, body),
    }
    answer = {}
    text = b"".join(wsgi_app(environ, lambda status, headers, exc_info=None: answer.update(status=status)))
    if not answer["status"].startswith("200") or text:
        raise SystemExit(f"the app answered {answer['status']}: {text[:300]!r}")


def cpu_per_command(wsgi_app, bodies: list[str]) -> float:
    began = time.thread_time()
    for body in bodies:
        call(wsgi_app, body)
    return (time.thread_time() - began) / len(bodies)


def measure(backend: str, standin: SlackStandIn, commands: int, repeats: int, tmp: Path) -> dict[str, float]:
    from bot import observability, server
    from bot.runtime import Runtime
    from bot.settings import load_settings
    from commands import router

    tmp.mkdir(parents=True, exist_ok=True)
    with throwaway_database(backend, tmp) as database:
        room = standin.create_channel(f"inc-cpu-{backend}", ["U0ALICE", BOT_USER_ID])
        open_incident(database, load_playbook(None), title=f"command CPU on {backend}", severity=1,
                      channel=room["id"])
        os.environ.update(bot_environment(database.url, standin))
        settings = load_settings()
        observability.configure_logging("json", observability.settings_secrets(settings))
        logging.getLogger().handlers[0].setStream(open(tmp / f"bot-{backend}.log", "w"))  # a line a command, kept
        runtime = Runtime.from_settings(settings)
        bot = server.make_wsgi_app(runtime, server.make_bolt_app(runtime))
        bare_app = SlackRequestHandler(bare_bolt_app(standin.api_url, listener_executor=OnThisThread()),
                                       path=EVENTS_PATH)
        spent = {"post": 0.0, "transaction": 0.0}
        timed_work, timed_transaction = router.run_joined_after_ack, Runtime.transaction
        timed_write = Runtime.log_in_room_at_once

        def run_after_ack_timed(*args, **kwargs):
            began = time.thread_time()
            timed_work(*args, **kwargs)
            spent["post"] += time.thread_time() - began

        @contextmanager
        def transaction_timed(self):
            began = time.thread_time()
            try:
                with timed_transaction(self) as session:
                    yield session
            finally:
                spent["transaction"] += time.thread_time() - began

        def write_timed(self, *args, **kwargs):
            began = time.thread_time()
            try:
                return timed_write(self, *args, **kwargs)
            finally:
                spent["transaction"] += time.thread_time() - began

        router.run_joined_after_ack, Runtime.transaction = run_after_ack_timed, transaction_timed
        Runtime.log_in_room_at_once = write_timed
        try:
            source = Commands(standin, [room])
            cpu_per_command(bot, source.bodies(WARMUP))
            cpu_per_command(bare_app, source.bodies(WARMUP))
            figures: dict[str, list[float]] = {"bare": [], "bot": [], "post": [], "transaction": []}
            for _ in range(repeats):
                bodies = source.bodies(commands)
                figures["bare"].append(cpu_per_command(bare_app, bodies))
                bodies = source.bodies(commands)
                spent.update(post=0.0, transaction=0.0)
                figures["bot"].append(cpu_per_command(bot, bodies))
                for part in spent:
                    figures[part].append(spent[part] / commands)
            entries = database.scalar("SELECT count(*) FROM timeline_entry WHERE kind IN ('decision', 'note')")
            if entries != WARMUP + repeats * commands:
                raise SystemExit(f"{entries} entries in the timeline for {WARMUP + repeats * commands} commands")
        finally:
            router.run_joined_after_ack, Runtime.transaction = timed_work, timed_transaction
            Runtime.log_in_room_at_once = timed_write
            runtime.engine.dispose()
    return {part: statistics.median(values) for part, values in figures.items()}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite,postgresql")
    parser.add_argument("--commands", type=int, default=1000, help="commands a pass")
    parser.add_argument("--repeats", type=int, default=5, help="passes; the median is shown")
    args = parser.parse_args()
    # Bolt's listeners and the after-ack work on the calling thread (see OnThisThread).
    from bot import observability
    from commands import router

    observability.ContextThreadPoolExecutor = OnThisThread
    router.AfterAckWork.submit = lambda self, room, work: work()
    # One command at a time: nothing is queued behind a post, so each is posted on its own.
    router.AfterAckWork.submit_joinable = lambda self, room, kind, item, work: work([item])
    standin = SlackStandIn(bot_token=BOT_TOKEN).start()
    tmp = Path(tempfile.mkdtemp(prefix="warroom-command-cpu-"))
    rows = []
    try:
        for backend in [b for b in args.backends.split(",") if b]:
            rows.append((backend, measure(backend, standin, args.commands, args.repeats, tmp / backend)))
    finally:
        standin.stop()
    print("| backend | bare | bot | of which the transaction | the post | the rest | bot / bare |")
    print("|---|---|---|---|---|---|---|")
    for backend, f in rows:
        rest = f["bot"] - f["transaction"] - f["post"]
        print(f"| {backend} | {ms(f['bare'])} | {ms(f['bot'])} | {ms(f['transaction'])} ({f['transaction'] / f['bot']:.0%}) "
              f"| {ms(f['post'])} ({f['post'] / f['bot']:.0%}) | {ms(rest)} ({rest / f['bot']:.0%}) "
              f"| {f['bot'] / f['bare']:.1f} |")
    print(f"\nCPU of one thread per command, median of {args.repeats} passes of {args.commands}; logs in {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
