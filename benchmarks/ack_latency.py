"""Benchmark: how fast `warroom serve` acknowledges slash commands, next to a bare Bolt app.

Starts the Slack stand-in (in this process: Slack's side competes for the same CPU), a bare Bolt
app that only calls `ack()` (this file with `--serve-bare`: a child process built like the bot's
app, with the same signing secret, token check and ack mode, served by waitress with 16 threads
through the same `SlackRequestHandler`), and, per backend, a fresh database (SQLite file or a
throwaway PostgreSQL database) holding one declared incident with its war room (`--rooms`: as many), and a real
`warroom serve` process, pinned to a CPU of its own as docs/deploy.md advises (`--pin`: the bare
app is left to the scheduler by default, where its p99 is lowest). Then, for 1, 8 and 32
concurrent clients (threads in a client process of their own, each with its own keep-alive
`http.client` connection, sending back to back), it sends signed `/incident decision` and
`/incident note` commands from the war room(s), alternating, each with its own trigger id. The bare
app and the bot take turns (`--rounds`, 3 by default, each with a share of the requests and an
unmeasured warm-up), so a slow spell of a shared machine falls on both.
Latency is the time until the HTTP response (the ack) arrives; the bot's after-ack Slack work
(posting the entry into the war room on the stand-in) is real load and is kept, and the script
waits for it to finish before the next turn. After each cell it checks that every command is in
the timeline and was posted into the channel.

Prints a Markdown table (p50/p99/max ack latency, throughput, and the CPU each server process
spent per request, the bot's after-ack work included) and whether the issue's targets held: p99
within 2x of the bare app at 8 clients, and no request near Slack's 3 s at 32 clients. On Linux it
also prints how much CPU other processes on the machine used while measuring: the figures mean
something only on an otherwise idle machine. `--neighbour PERCENT` makes the machine slow on purpose,
as this VM's host does in its slow hours (benchmarks/neighbour.py), and both servers run beside it.
Exits non-zero on errors (a request not answered 200, a command missing from the timeline or the
channel), never because a target was missed. Run:

    .venv/bin/python -m benchmarks.ack_latency
    .venv/bin/python -m benchmarks.ack_latency --backends sqlite --clients 8 --requests 800
    .venv/bin/python -m benchmarks.ack_latency --clients 8 --requests 2000 --neighbour 40   # a slow hour
"""

from __future__ import annotations

import argparse
import gc
import http.client
import logging
import multiprocessing
import os
import platform
import signal
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from itertools import count
from pathlib import Path
from typing import Iterator
from urllib.parse import urlencode, urlsplit

from benchmarks import neighbour
from benchmarks.reminder_lateness import percentile
from bot.server import EVENTS_PATH
from bot.slack_standin.server import APP_ID, BOT_USER_ID, TEAM_DOMAIN, TEAM_ID, SlackStandIn
from bot.slack_standin.simulator import FORM, SLACK_ACK_TIMEOUT_SECONDS, SLACK_USER_AGENT, sign
from bot.migrate import upgrade_to_head
from bot.playbook import load_playbook
from tests.conftest import (BOT_TOKEN, SIGNING_SECRET, BotProcess, Database, _create_database,
                            bot_environment, entry_keys_of, free_port, open_incident)

USER_ID, USER_NAME = "U0ALICE", "alice"
VERIFICATION_TOKEN = "standin-verification-token"
WAITRESS_THREADS = 16  # what `warroom serve` uses (bot.server.serve_http)
CLIENT_TIMEOUT = 15.0  # far past Slack's 3 s, so a slow ack is measured rather than cut off
TEXTS = {
    "decision": "Roll back prompt template v14 to v13: the retrieval filter dropped the refund-policy index",
    "note": "Customer ticket #4411: the bot promised a 90-day refund we don't offer (東京 tenant)",
}


# ------------------------------------------------------------------ the bare Bolt app (child process)
def bare_bolt_app(api_url: str, listener_executor=None):
    """A Bolt app built like the bot's (same signing secret, token check, ack mode) whose only
    listener acks `/incident`."""
    from slack_bolt import App

    from bot.slack_io import make_client

    app = App(client=make_client(BOT_TOKEN, api_url), signing_secret=SIGNING_SECRET, process_before_response=False,
              token_verification_enabled=True, raise_error_for_unhandled_request=False,
              listener_executor=listener_executor)

    @app.command("/incident")
    def only_ack(ack):
        ack()

    return app


def serve_bare(port: int) -> None:
    """A Bolt app built like the bot's (same signing secret, token check, ack mode) whose only
    listener acks `/incident`, served by waitress like `warroom serve`."""
    from slack_bolt.adapter.wsgi import SlackRequestHandler
    from waitress import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if os.environ.get("WARROOM_CPU"):
        from bot.cli import pin_to_one_cpu

        pin_to_one_cpu(int(os.environ["WARROOM_CPU"]))  # `--pin both`: the deployment the bot gets
    slack_handler = SlackRequestHandler(bare_bolt_app(os.environ["SLACK_API_URL"]), path=EVENTS_PATH)

    def wsgi_app(environ, start_response):
        if environ.get("PATH_INFO") == "/healthz":
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "11")])
            return [b'{"ok":true}']
        return slack_handler(environ, start_response)

    try:
        serve(wsgi_app, host="127.0.0.1", port=port, threads=WAITRESS_THREADS, ident="bare-bolt")
    except KeyboardInterrupt:
        pass


# ------------------------------------------------------------------------------------ the load
@dataclass
class Run:
    """What the clients saw for one server in one cell."""

    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    problems: list[str] = field(default_factory=list)
    wall: float = 0.0
    other_cores: float | None = None  # CPU other processes on the machine used meanwhile
    server_cpu: float = 0.0  # CPU seconds the server (bot or bare app) process used meanwhile
    client_cpu: float = 0.0  # CPU seconds the client process used sending and timing them

    def add(self, other: Run) -> None:
        """Fold in another round of the same cell."""
        self.latencies += other.latencies
        self.failures += other.failures
        self.problems += other.problems
        self.wall += other.wall
        self.server_cpu += other.server_cpu
        self.client_cpu += other.client_cpu
        if other.other_cores is not None:
            self.other_cores = max(self.other_cores or 0.0, other.other_cores)

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies)

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 0.99)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.wall

    @property
    def cpu_per_request(self) -> float:
        return self.server_cpu / len(self.latencies)

    @property
    def client_cpu_per_request(self) -> float:
        return self.client_cpu / len(self.latencies)


class Commands:
    """Slack-shaped `/incident decision|note` form bodies from the war rooms in turn (channels: id,
    name), each with a new trigger."""

    def __init__(self, standin: SlackStandIn, rooms: list[dict]):
        self.standin, self.rooms = standin, rooms
        self._numbers = count(1)

    def bodies(self, how_many: int) -> list[str]:
        bodies = []
        for _ in range(how_many):
            n = next(self._numbers)
            subcommand = "decision" if n % 2 else "note"
            room = self.rooms[n % len(self.rooms)]
            token = self.standin.issue_response_url(USER_ID, room["id"])
            bodies.append(urlencode({
                "token": VERIFICATION_TOKEN, "team_id": TEAM_ID, "team_domain": TEAM_DOMAIN,
                "channel_id": room["id"], "channel_name": room["name"],
                "user_id": USER_ID, "user_name": USER_NAME, "command": "/incident",
                "text": f"{subcommand} {TEXTS[subcommand]} (#{n})", "api_app_id": APP_ID,
                "is_enterprise_install": "false", "response_url": self.standin.response_url(token),
                "trigger_id": self.standin.issue_trigger(USER_ID),
            }))
        return bodies


class ClientProcess:
    """The clients run (`send_from_here`) in a process of their own: they time each ack, and in this
    process they would wait for the interpreter lock behind the stand-in, which is Slack's side and
    busy with the bot's posts (it still shares the machine's CPU, and is counted as ours)."""

    def __init__(self) -> None:
        self._pool = multiprocessing.get_context("spawn").Pool(1)
        self.pid = self._pool.apply(os.getpid)

    def send(self, urls: list[str], bodies: list[str], clients: int) -> Run:
        return self._pool.apply(send_from_here, (urls, bodies, clients))

    def close(self) -> None:
        self._pool.terminate()


def send_from_here(urls: list[str], bodies: list[str], clients: int) -> Run:
    """`clients` threads with their own keep-alive connection share `bodies`, each sending back to back
    (to the servers at `urls` in turn, one server a client, as a load balancer spreads connections).

    Plain `http.client`, not `requests`: on this 2-core machine the clients share the CPU with the
    server they measure, and `requests` spent ~3.5x the CPU a request (0.7 ms against 0.2) (its CPU slowed the
    busier server more, and its threads waited longer for their own interpreter lock before
    reading the clock)."""
    run = Run()
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client(url: str, mine: list[str]) -> None:
        latencies, failures, problems = [], 0, []
        target = urlsplit(url)
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=CLIENT_TIMEOUT)
        start.wait()
        for body in mine:
            timestamp = str(int(time.time()))
            headers = {"Content-Type": FORM, "User-Agent": SLACK_USER_AGENT,
                       "X-Slack-Request-Timestamp": timestamp,
                       "X-Slack-Signature": sign(SIGNING_SECRET, timestamp, body)}
            began = time.perf_counter()
            try:
                connection.request("POST", target.path, body=body.encode(), headers=headers)
                response = connection.getresponse()
                text = response.read()
                latencies.append(time.perf_counter() - began)
                # A decision or note is acked with an empty body; text means the bot refused it.
                if response.status != 200 or text:
                    failures += 1
                    problems.append(f"HTTP {response.status}: {text[:200].decode(errors='replace')}")
            except (OSError, http.client.HTTPException) as exc:
                latencies.append(time.perf_counter() - began)
                failures += 1
                problems.append(type(exc).__name__)
                connection.close()  # the next request opens a new connection
        connection.close()
        with lock:
            run.latencies += latencies
            run.failures += failures
            run.problems += problems

    threads = [threading.Thread(target=client, args=(urls[i % len(urls)], bodies[i::clients]), daemon=True)
               for i in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    run.wall = time.perf_counter() - began
    return run


# ----------------------------------------------------------------------------------- the bench
@dataclass
class Cell:
    backend: str
    clients: int
    bare: Run
    bot: Run

    @property
    def failures(self) -> int:
        return self.bare.failures + self.bot.failures


def _process_cpu(pid: int | str) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(pids: list[int]) -> tuple[float, float] | None:
    """(CPU seconds the machine has been busy, of which this benchmark's: itself, its servers, PostgreSQL),
    from /proc (None elsewhere)."""
    try:
        with open("/proc/stat") as stat:
            ticks = [int(v) for v in stat.readline().split()[1:9]]
        busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
        ours = sum(_process_cpu(pid) for pid in pids)
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and open(f"/proc/{entry}/comm").read().strip() == "postgres":
                    ours += _process_cpu(entry)
            except OSError:
                pass  # a backend that just ended
        return busy, ours
    except OSError:
        return None


def measure(servers: list[BotProcess], commands: Commands, clients: int, requests_: int, warmup: int, standin,
            sender: ClientProcess, pids: list[int]) -> Run:
    urls = [f"{server.url}{EVENTS_PATH}" for server in servers]
    sender.send(urls, commands.bodies(warmup), clients)
    standin.wait_until_quiet()
    bodies = commands.bodies(requests_)

    def server_cpu() -> float:
        return sum(_process_cpu(server.process.pid) for server in servers)

    # The stand-in keeps every message and call it was sent, in this process: its garbage
    # collector's full passes over them grew to ~100 ms pauses, during which the bot's posts (and,
    # through the listener threads they hold, its acks) waited. Slack pauses for no one's heap but
    # its own; what is kept so far is set aside before each measurement, so the collector passes over
    # the new objects only.
    gc.collect()
    gc.freeze()
    before, server_before, client_before = cpu_snapshot(pids), server_cpu(), _process_cpu(sender.pid)
    run = sender.send(urls, bodies, clients)
    after = cpu_snapshot(pids)
    run.client_cpu = _process_cpu(sender.pid) - client_before
    # The bot's after-ack work (posting into the room) may still be running: its CPU counts too.
    standin.wait_until_quiet(timeout=60)
    run.server_cpu = server_cpu() - server_before
    if before and after:
        run.other_cores = max(0.0, (after[0] - before[0]) - (after[1] - before[1])) / run.wall
    return run


def bot_work_done(database, standin, rooms: list[dict]) -> tuple[int, int, int]:
    """How many decisions and notes are in the timeline, how many the bot posted into the war rooms
    (by the entry keys its messages carry), and in how many messages: entries typed while a room's
    last post is with Slack are posted together, as one message."""
    entries = database.scalar("SELECT count(*) FROM timeline_entry WHERE kind IN ('decision', 'note')")
    messages = [message for room in rooms for message in standin.messages(room["id"]) if message["user"] == BOT_USER_ID]
    return entries, sum(len(entry_keys_of(message)) for message in messages), len(messages)


@contextmanager
def throwaway_database(backend: str, tmp: Path) -> Iterator[Database]:
    """Like tests.conftest.fresh_database, but an interrupted migration drops the database too."""
    url, drop = _create_database(backend, tmp)
    database = None
    try:
        upgrade_to_head(url)
        database = Database(backend, url)
        yield database
    finally:
        if database is not None:
            database.engine.dispose()
        drop()


def pinned(n: int, pin: bool) -> dict:
    """The environment that pins server number n (from 0) to a CPU of its own, as docs/deploy.md advises."""
    return {"WARROOM_CPU": str(n % (os.cpu_count() or 1))} if pin else {}


def run_backend(backend: str, standin: SlackStandIn, bares: list[BotProcess], sender: ClientProcess,
                plan: list[tuple[int, int]], rounds: int, warmup: int, processes: int, pin_bot: bool,
                rooms: int, tmp: Path, neighbour_pids: list[int]) -> list[Cell]:
    cells = []
    tmp.mkdir(parents=True, exist_ok=True)
    with throwaway_database(backend, tmp) as database:
        if backend == "postgresql":
            print(f"PostgreSQL server {database.scalar('SHOW server_version')}", flush=True)
        channels = [standin.create_channel(f"inc-bench-{backend}-{n + 1}", [USER_ID, BOT_USER_ID])
                    for n in range(rooms)]
        for n, channel in enumerate(channels):
            open_incident(database, load_playbook(None), title=f"ack latency benchmark on {backend} ({n + 1})",
                          severity=1, channel=channel["id"])
        bots = [BotProcess(bot_environment(database.url, standin, **pinned(n, pin_bot)), free_port(),
                           tmp / f"bot-{backend}-{n + 1}.log")
                for n in range(processes)]
        try:
            for bot in bots:
                bot.wait_healthy()
            bot_commands, bare_commands = Commands(standin, channels), Commands(standin, channels)
            # The noisy neighbours' CPU is asked for, not the machine being busy: not counted as others'.
            pids = [os.getpid(), sender.pid, *(server.process.pid for server in [*bares, *bots]), *neighbour_pids]
            for clients, requests_ in plan:
                # The two servers take turns, a share of the requests each round, so a slower spell
                # of this shared machine falls on both rather than on whichever ran then.
                bare_run, bot_run = Run(), Run()
                entries, posts, messages = bot_work_done(database, standin, channels)
                share = [requests_ // rounds + (r < requests_ % rounds) for r in range(rounds)]
                for in_round in share:
                    bare_run.add(measure(bares, bare_commands, clients, in_round, warmup, standin, sender, pids))
                    bot_run.add(measure(bots, bot_commands, clients, in_round, warmup, standin, sender, pids))
                # Each command acked is in the timeline and was posted; a refused one is already a failure.
                expected = rounds * warmup + requests_ - bot_run.failures
                entries_after, posts_after, messages_after = bot_work_done(database, standin, channels)
                for what, done in (("timeline entries", entries_after - entries),
                                   ("posts in the war room", posts_after - posts)):
                    if done != expected:
                        bot_run.problems.append(f"{done} new {what} for {expected} commands acked")
                bot_run.failures += max(0, expected - (entries_after - entries), expected - (posts_after - posts))
                cells.append(Cell(backend, clients, bare_run, bot_run))
                print(f"  {backend:<10} {clients:>2} clients: bare p99 {bare_run.p99 * 1000:.1f} ms, "
                      f"bot p99 {bot_run.p99 * 1000:.1f} ms; {posts_after - posts} entries posted in "
                      f"{messages_after - messages} messages", file=sys.stderr, flush=True)
        finally:
            for bot in bots:
                bot.stop()
    return cells


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def report(cells: list[Cell]) -> None:
    print("| backend | clients | bare p50 | bare p99 | bot p50 | bot p99 | p99 ratio | bot max | bot req/s "
          "| bare req/s | bot CPU/req | bare CPU/req | client CPU/req | failures |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for c in cells:
        print(f"| {c.backend} | {c.clients} | {ms(c.bare.p50)} | {ms(c.bare.p99)} | {ms(c.bot.p50)} | "
              f"{ms(c.bot.p99)} | {c.bot.p99 / c.bare.p99:.2f} | {ms(max(c.bot.latencies))} | "
              f"{c.bot.rate:.0f} | {c.bare.rate:.0f} | {ms(c.bot.cpu_per_request)} | {ms(c.bare.cpu_per_request)} | "
              f"{ms(c.bot.client_cpu_per_request)} | {c.failures} |")
    print()
    for backend in dict.fromkeys(c.backend for c in cells):
        at8 = [c for c in cells if c.backend == backend and c.clients == 8]
        at32 = [c for c in cells if c.backend == backend and c.clients == 32]
        if at8:
            held = at8[0].bot.p99 <= 2 * at8[0].bare.p99
            print(f"{backend}: p99 within 2x of bare at 8 clients: {'yes' if held else 'no'} "
                  f"({at8[0].bot.p99 / at8[0].bare.p99:.2f}x)")
        if at32:
            worst = max(at32[0].bot.latencies)
            print(f"{backend}: max under {SLACK_ACK_TIMEOUT_SECONDS:.0f} s at 32 clients: "
                  f"{'yes' if worst < SLACK_ACK_TIMEOUT_SECONDS else 'no'} "
                  f"(max {ms(worst)}, {worst / SLACK_ACK_TIMEOUT_SECONDS:.0%} of Slack's 3 s)")
    others = [(c, server, run.other_cores) for c in cells for server, run in (("bare", c.bare), ("bot", c.bot))
              if run.other_cores is not None]
    if others:
        busiest = max(others, key=lambda other: other[2])
        print(f"CPU other processes on the machine used while measuring: up to {busiest[2]:.2f} of "
              f"{os.cpu_count()} cores ({busiest[0].backend}, {busiest[0].clients} clients, {busiest[1]})")
        if busiest[2] > 0.2:
            print("  the machine was not idle: " + ", ".join(
                f"{c.backend}/{c.clients}/{server} {cores:.2f}" for c, server, cores in others if cores > 0.2)
                + " cores; those figures are pessimistic")
    for c in cells:
        for server, run in (("bare", c.bare), ("bot", c.bot)):
            if run.problems:
                shown = "; ".join(dict.fromkeys(run.problems))
                print(f"{c.backend}, {c.clients} clients, {server}: {run.failures} failed: {shown[:500]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite,postgresql")
    parser.add_argument("--clients", default="1,8,32", help="comma-separated concurrent client counts")
    parser.add_argument("--requests", default="500,2000,2000",
                        help="measured requests per cell and server: one number, or one per --clients entry")
    parser.add_argument("--rounds", type=int, default=3,
                        help="turns the bare app and the bot take in each cell, each with a share of the requests")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured requests before each measurement")
    parser.add_argument("--processes", type=int, default=1,
                        help="`warroom serve` processes on the one database, and as many bare apps, the "
                             "clients spread over them as a load balancer would")
    parser.add_argument("--pin", choices=("bot", "none", "both"), default="bot",
                        help="which servers run pinned, each process to a CPU of its own (WARROOM_CPU): the bot, "
                             "as docs/deploy.md advises, with the bare app left to the scheduler, where it is "
                             "fastest (default); neither; or both")
    parser.add_argument("--slack-latency", type=float, default=0.0, metavar="MS",
                        help="milliseconds the stand-in takes to answer each chat.postMessage, as Slack does from "
                             "a host far from it (0: as fast as the stand-in can)")
    parser.add_argument("--rooms", type=int, default=1,
                        help="war rooms (incidents) the commands are typed in, in turn; a room's posts go to Slack "
                             "one at a time, in order, so with --slack-latency one room takes 1000/MS posts a second")
    parser.add_argument("--neighbour", type=float, default=0.0, metavar="PERCENT",
                        help="a noisy neighbour on each CPU taking this share of it in slices of a few ms, as "
                             "this VM's host does in its slow hours (benchmarks/neighbour.py; 0: none)")
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.port)
        return 0

    backends = [b for b in args.backends.split(",") if b]
    if unknown := set(backends) - {"sqlite", "postgresql"}:
        parser.error(f"unknown backend {', '.join(sorted(unknown))}")
    clients = [int(c) for c in args.clients.split(",") if c]
    requests_ = [int(r) for r in args.requests.split(",") if r]
    if len(requests_) == 1:
        requests_ *= len(clients)
    if len(requests_) != len(clients):
        parser.error("--requests takes one number, or one per --clients entry")
    if args.rounds < 1 or args.processes < 1 or args.rooms < 1:
        parser.error("--rounds, --processes and --rooms must be at least 1")
    if args.neighbour:
        try:
            neighbour.check_share(args.neighbour)
        except ValueError as exc:
            parser.error(f"--neighbour: {exc}")
    plan = list(zip(clients, requests_))

    # Ctrl-C (even when started in the background) and SIGTERM unwind, so the servers stop and the
    # PostgreSQL database is dropped.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    began = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="warroom-ack-bench-"))
    print(f"machine: {os.cpu_count()} CPUs ({platform.machine()}, {platform.system()}); Python "
          f"{platform.python_version()}; " + ", ".join(f"{p} {version(p)}" for p in
                                                       ("slack_bolt", "slack_sdk", "waitress", "sqlalchemy", "psycopg")))
    print(f"waitress threads {WAITRESS_THREADS}; warm-up {args.warmup} requests; {args.rounds} rounds; "
          f"{args.processes} process(es) of each server; {args.rooms} war room(s); pinned to a CPU each: {args.pin}; chat.postMessage "
          f"answered in +{args.slack_latency:g} ms; logs in {tmp}",
          flush=True)
    cells: list[Cell] = []
    neighbours, neighbour_pids = ExitStack(), []
    if args.neighbour:
        neighbour_pids, how = neighbours.enter_context(neighbour.noisy_neighbours(args.neighbour))
        print(f"noisy neighbour: {how}", flush=True)
    standin = SlackStandIn(bot_token=BOT_TOKEN).start()
    standin.delay("chat.postMessage", args.slack_latency / 1000)
    sender = ClientProcess()
    bares: list[BotProcess] = []
    try:
        # The bare app as child processes, started and stopped like `warroom serve`, as many as the bot's.
        for n in range(args.processes):
            bares.append(BotProcess(bot_environment("sqlite://", standin, **pinned(n, args.pin == "both")),
                                    free_port(), tmp / f"bare-bolt-{n + 1}.log", "benchmarks.ack_latency",
                                    "--serve-bare"))
        for bare in bares:
            bare.wait_healthy()
        for backend in backends:
            cells += run_backend(backend, standin, bares, sender, plan, args.rounds, args.warmup, args.processes,
                                 args.pin != "none", args.rooms, tmp / backend, neighbour_pids)
    finally:
        for bare in bares:
            bare.stop()
        sender.close()
        standin.stop()
        neighbours.close()
    print()
    report(cells)
    print(f"\ntotal run time {time.monotonic() - began:.0f} s")
    return 1 if any(c.failures for c in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
