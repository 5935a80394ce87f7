"""`warroom sandbox`: the whole bot on this machine, with a terminal in place of Slack's client.

It starts the Slack stand-in, migrates a SQLite file, serves the real bot over HTTP on 127.0.0.1,
and lets a person type `/incident …` as a chosen user, post and :pushpin: messages, and fill in
the bot's forms. After each action it prints what the bot posted, channel by channel.
"""

from __future__ import annotations

import logging
import re
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from bot.migrate import upgrade_to_head
from bot.playbook import parse_duration
from bot.runtime import Runtime
from bot.settings import Settings
from bot.slack_standin.server import SlackStandIn
from bot.slack_standin.simulator import SlackSimulator

ANNOUNCE_CHANNEL = "C0INCIDENTS"
HELP = """\
Type what you would type in Slack:
  /incident declare sev1 Support bot quoting a refund policy we don't have
  /incident role ic @bob
  /incident help
  /incident drill list        (then: /incident drill start <scenario> --speed 60)
Sandbox commands:
  :as <user>        act as another person (alice, bob, carol, dave)
  :in <channel>     move to a channel (#general, #incidents, #inc-1-…, #drill-2-…)
  :say <text>       post a message in this channel as yourself
  :pin <n>          react with :pushpin: to message [n] of this channel
  :wait <30s>       let time pass, then show what the bot posted (update reminders)
  :show             this channel's messages, numbered
  :channels         the channels and who is in them
  :help  :quit"""


class SandboxTerminal:
    """A line-by-line Slack client over the stand-in: reads commands, prints what happened."""

    def __init__(self, standin: SlackStandIn, simulator: SlackSimulator, user: str, out: TextIO,
                 files_dir: Path | None = None):
        self.standin, self.simulator, self.out = standin, simulator, out
        # Where files the bot shares (exports, postmortem drafts) are saved for the person to open.
        self.files_dir = files_dir or Path("warroom-sandbox-files")
        self.user_id = self._user_id(user)
        self.channel_id = "C0GENERAL"
        self.seen: set[tuple[str, str]] = set()
        self.seen_ephemerals = 0
        self.seen_views: set[str] = set()
        self.visited_rooms: set[str] = set()
        self._mark_everything_seen()

    # ---------------------------------------------------------------- input
    def run(self, lines, echo: bool = False) -> None:
        """Read lines until they run out or :quit; `echo` shows them when they come from a file."""
        self.lines, self.echo = iter(lines), echo
        self.say(HELP)
        self.prompt()
        for line in self.lines:
            line = line.strip()
            if self.echo:
                self.say(line)
            if line:
                if not self.handle(line):
                    return
            self.prompt()
        self.say("")

    def handle(self, line: str) -> bool:
        """Act on one line; False to quit."""
        word, _, rest = line.partition(" ")
        rest = rest.strip()
        if word.startswith("/"):
            if word != "/incident":
                self.say(f"  (only /incident is installed here, not {word})")
                return True
            result = self.simulator.command(self.user_id, self.channel_id, self.as_slack_sends(rest))
            if result.status != 200:
                self.say(f"  (the bot answered HTTP {result.status})")
            elif result.body:
                ack = result.body if isinstance(result.body, str) else result.body.get("text", "")
                self.say_message("only you", self.to_terminal(ack))
            self.show_news()
        elif word == ":as":
            self.user_id = self._user_id(rest)
            self.say(f"  you are now {self.user_name(self.user_id)}")
        elif word == ":in":
            self.move_to(rest)
        elif word == ":say":
            if self.user_id not in self.standin.channel(self.channel_id)["members"]:
                self.say(f"  {self.user_name(self.user_id)} is not in #{self._channel_name(self.channel_id)}: "
                         "give them a role there (`/incident role scribe @name`), or :in another channel")
                return True
            self.simulator.post_message(self.user_id, self.channel_id, rest)
            self.show_news()
        elif word == ":pin":
            self.pin(rest)
        elif word == ":wait":
            self.wait(rest)
        elif word == ":show":
            self.show_channel()
        elif word == ":channels":
            for channel in self.standin.channels():
                members = ", ".join(self.user_name(m) for m in channel["members"])
                self.say(f"  #{channel['name']}: {members}")
        elif word == ":help":
            self.say(HELP)
        elif word in (":quit", ":q", ":exit"):
            return False
        else:
            self.say("  not understood; :help lists what you can type")
        return True

    def as_slack_sends(self, typed: str) -> str:
        """What Slack's client sends for typed text (should_escape: true): entities, @-mentions as ids."""
        text = typed.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

        def mention(match: re.Match) -> str:
            name = match.group(1).lower()
            if name in ("channel", "here", "everyone"):
                return f"<!{name}>"
            user = self.standin.user("U0" + name.upper())
            return f"<@{user['id']}|{user['name']}>" if user else match.group(0)

        return re.sub(r"(?<![\w&])@(\w+)", mention, text)

    def wait(self, duration: str) -> None:
        """Let time pass (reminders fall due while people work), then show what arrived."""
        try:
            seconds = parse_duration(duration or "10s").total_seconds()
        except ValueError as exc:
            self.say(f"  {exc}")
            return
        time.sleep(seconds)
        self.show_news()

    def move_to(self, name: str) -> None:
        channel = self.standin.channel(name.lstrip("#"))
        if channel is None:
            self.say(f"  no channel {name}; :channels lists them")
        elif self.user_id not in channel["members"]:
            self.say(f"  {self.user_name(self.user_id)} is not in #{channel['name']}")
        else:
            self.channel_id = channel["id"]
            self.say(f"  now in #{channel['name']}")

    def pin(self, number: str) -> None:
        messages = self.standin.messages(self.channel_id)
        if not number.isdigit() or not 1 <= int(number) <= len(messages):
            self.say("  :pin takes a message number from :show")
            return
        self.simulator.react(self.user_id, self.channel_id, messages[int(number) - 1]["ts"])
        self.show_news()

    # --------------------------------------------------------------- output
    def show_news(self) -> None:
        """Wait for the bot's after-ack work, then print every new message, reply and form."""
        self.standin.wait_until_quiet(quiet_for=0.4)
        for channel in self.standin.channels():
            pinned = {pin["ts"] for pin in self.standin.pins(channel["id"])}
            for message in self.standin.messages(channel["id"]):
                if (channel["id"], message["ts"]) in self.seen:
                    continue
                self.seen.add((channel["id"], message["ts"]))
                in_thread = message.get("thread_ts") not in (None, message["ts"])
                who = f"#{channel['name']}{' (thread)' if in_thread else ''} {self.user_name(message.get('user'))}"
                self.say_message(who + (" :pushpin: pinned" if message["ts"] in pinned else ""),
                                 self.message_text(message))
                self.save_files(message)
        for message in self.standin.dm_messages(self.user_id):
            if ("dm", message["ts"]) not in self.seen:
                self.seen.add(("dm", message["ts"]))
                self.say_message(f"direct message from {self.user_name(message.get('user'))}",
                                 self.message_text(message))
        ephemerals = self.standin.ephemerals()
        for ephemeral in ephemerals[self.seen_ephemerals:]:
            if ephemeral["user"] == self.user_id:
                self.say_message("only you", self.message_text(ephemeral))
        self.seen_ephemerals = len(ephemerals)
        self._follow_into_new_room()
        for view in self.standin.views():
            if view["id"] not in self.seen_views and not view["closed"] and view["user"] == self.user_id:
                self.seen_views.add(view["id"])
                self.fill_in(view)

    def save_files(self, message: dict) -> None:
        """A file shared in a message is written to disk, as a person would download it."""
        for shared in message.get("files") or []:
            upload = next((f for f in self.standin.files() if f["id"] == shared["id"]), None)
            if upload is None or upload["content"] is None:
                continue
            self.files_dir.mkdir(parents=True, exist_ok=True)
            path = self.files_dir / Path(upload["name"]).name
            path.write_bytes(upload["content"])
            self.say(f"      [file] {upload['title'] or upload['name']}: saved to {path}")

    def fill_in(self, view: dict) -> None:
        """Ask for each of a form's inputs on the terminal, then submit it."""
        form = view["view"]
        self.say(f"  [form] {form['title']['text']}")
        values = {}
        for block in form["blocks"]:
            if block.get("type") != "input":
                continue
            element = block["element"]
            label = block["label"]["text"] + (" (optional)" if block.get("optional") else "")
            if element["type"] == "static_select":
                options = element["options"]
                for index, option in enumerate(options, 1):
                    self.say(f"      {index}. {option['text']['text']}")
                answer = self.ask(f"    {label} [number]: ")
                chosen = options[int(answer) - 1] if answer.isdigit() and 1 <= int(answer) <= len(options) \
                    else element.get("initial_option", options[0])
                values[element["action_id"]] = chosen["value"]
            else:
                values[element["action_id"]] = self.ask(f"    {label}: ")
        result = self.simulator.submit_view(self.user_id, view["id"], values)
        errors = result.body.get("errors") if isinstance(result.body, dict) else None
        if errors:
            for field, problem in errors.items():
                self.say(f"  [form] {field}: {problem}")
        self.show_news()

    def show_channel(self) -> None:
        channel = self.standin.channel(self.channel_id)
        self.say(f"  #{channel['name']}")
        for index, message in enumerate(self.standin.messages(self.channel_id), 1):
            self.say_message(f"[{index}] {self.user_name(message.get('user'))}", self.message_text(message))

    def _follow_into_new_room(self) -> None:
        # Like Slack's client jumping to a channel you were just added to.
        rooms = [c for c in self.standin.channels()
                 if c["name"].startswith(("inc-", "drill-")) and self.user_id in c["members"]]
        newest = max(rooms, key=lambda c: c["created"], default=None)
        if newest and newest["id"] != self.channel_id and newest["id"] not in self.visited_rooms:
            self.visited_rooms.add(newest["id"])
            self.channel_id = newest["id"]
            self.say(f"  (you were added to #{newest['name']}; now in it)")

    def message_text(self, message: dict) -> str:
        sections = [b["text"]["text"] for b in message.get("blocks") or [] if (b.get("text") or {}).get("text")]
        return self.to_terminal("\n".join(sections) if sections else message.get("text") or "")

    def to_terminal(self, mrkdwn: str) -> str:
        """Slack's markup as a person would read it in the client."""
        text = re.sub(r"<@([A-Z0-9]+)(?:\|[^>]*)?>", lambda m: "@" + self.user_name(m.group(1)), mrkdwn)
        text = re.sub(r"<#([A-Z0-9]+)(?:\|[^>]*)?>", lambda m: "#" + self._channel_name(m.group(1)), text)
        text = re.sub(r"<!(\w+)(?:\|[^>]*)?>", r"@\1", text)
        text = re.sub(r"<([^|>]+)\|([^>]+)>", r"\2 (\1)", text)
        return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")

    def say_message(self, who: str, text: str) -> None:
        lines = text.splitlines() or [""]
        self.say(f"  {who}: {lines[0]}")
        for line in lines[1:]:
            self.say(f"      {line}")

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def prompt(self) -> None:
        channel = self.standin.channel(self.channel_id)
        print(f"{self.user_name(self.user_id)} in #{channel['name']}> ", end="", file=self.out, flush=True)

    def ask(self, question: str) -> str:
        print(question, end="", file=self.out, flush=True)
        answer = next(self.lines, "").strip()
        if self.echo:
            self.say(answer)
        return answer

    # -------------------------------------------------------------- helpers
    def user_name(self, user_id: str | None) -> str:
        user = self.standin.user(user_id) if user_id else None
        return user["name"] if user else (user_id or "?")

    def _channel_name(self, channel_id: str) -> str:
        channel = self.standin.channel(channel_id)
        return channel["name"] if channel else channel_id

    def _user_id(self, name: str) -> str:
        name = name.lstrip("@").lower()
        user_id = "U0" + name.upper()
        if self.standin.user(user_id):
            return user_id
        raise SystemExit(f"warroom sandbox: no user {name!r}; try alice, bob, carol or dave")

    def _mark_everything_seen(self) -> None:
        for channel in self.standin.channels():
            for message in self.standin.messages(channel["id"]):
                self.seen.add((channel["id"], message["ts"]))


def run_sandbox(database_path: str = "warroom-sandbox.db", user: str = "alice", lines=None,
                out: TextIO = sys.stdout) -> int:
    """Start the stand-in and the bot, then hand the terminal to the person."""
    from waitress import create_server

    from bot.server import make_bolt_app, make_wsgi_app, start_ticker

    log_path = Path(database_path).with_suffix(".log")
    logging.getLogger().handlers.clear()
    logging.basicConfig(filename=log_path, level=logging.INFO, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    standin = SlackStandIn().start()
    signing_secret = secrets.token_hex(16)
    database_url = f"sqlite:///{Path(database_path).resolve()}"
    upgrade_to_head(database_url)
    settings = Settings(
        slack_bot_token="xoxb-standin", slack_signing_secret=signing_secret,
        slack_api_url=standin.api_url, database_url=database_url,
        warroom_announce_channel=ANNOUNCE_CHANNEL,
    )
    runtime = Runtime.from_settings(settings)
    app = make_bolt_app(runtime)
    ticker = start_ticker(runtime, app)
    server = create_server(make_wsgi_app(runtime, app), host="127.0.0.1", port=0, threads=8)
    threading.Thread(target=server.run, daemon=True).start()
    bot_url = f"http://127.0.0.1:{server.effective_port}/slack/events"
    print(f"Warroom sandbox: bot on {bot_url}, Slack stand-in on {standin.base_url}, "
          f"database {database_path}, log {log_path}", file=out)
    terminal = SandboxTerminal(standin, SlackSimulator(standin, bot_url, signing_secret), user, out,
                               files_dir=Path(database_path).resolve().with_name("warroom-sandbox-files"))
    try:
        if lines is None:
            terminal.run(sys.stdin, echo=not sys.stdin.isatty())
        else:
            terminal.run(lines, echo=True)
    finally:
        ticker.stop()
        server.close()
        standin.stop()
        runtime.engine.dispose()
    return 0


# ---------------------------------------------------------------------------------- drill run

# Who the scripted team puts in each role (alice facilitates, and holds what is left over).
TEAM = {"ic": "bob", "comms": "carol", "tech": "dave", "scribe": "dave"}


def drill_script(scenario, playbook, speed: float) -> list[str]:
    """What a well-drilled team types through the scenario, timed in scenario time.

    It follows the answer key, the way a facilitator demonstrates a drill to newcomers; the
    scorecard still shows what it left out (not every evidence item, one decision without an owner).
    """
    expected, system = scenario.expected, scenario.system

    def wait(scenario_seconds: float) -> str:
        return f":wait {max(1, round(scenario_seconds / speed))}s"

    def person(role: str) -> str:
        return TEAM.get(role, "alice")

    containment = expected.containment_hint
    if not any(keyword.lower() in containment.lower() for keyword in expected.containment):
        containment += f" ({expected.containment[0]})"
    lines = [":as alice", f"/incident drill start {scenario.name} --speed {speed:g}", wait(60)]
    lines += [f"/incident role {role} @{person(role)}" for role in expected.roles]
    lines += [":as bob", f"/incident sev {expected.severity} per the severity matrix",
              f"/incident classify {expected.driver} {expected.failure_mode}", wait(120),
              f"/incident contain {containment} reversible verify: the symptom stops in the dashboards",
              f"/incident decision Contain first: {containment}; explain later owner: @{person('tech')}",
              ":as dave", f"/incident evidence model {system.model} {system.model_version}",
              f"/incident evidence prompt {system.prompt_template}"]
    if system.retrieval_sources:
        lines.append(f"/incident evidence retrieval {system.retrieval_sources[0]}")
    interval = playbook.update_interval(expected.severity)
    elapsed, update = 8 * 60.0, 1
    lines += [":as carol", "/incident update Contained while we investigate; next update on the cadence."]
    while interval and elapsed + interval.total_seconds() < scenario.duration.total_seconds():
        step = interval.total_seconds() - 120  # a little ahead of each due time
        lines.append(wait(step))
        elapsed += step
        update += 1
        lines.append(f"/incident update Update {update}: containment holding, root cause under investigation.")
    lines += [":as bob", f"/incident decision Notification: {expected.notification_reason}",
              f"/incident notify decide {expected.notification} {expected.notification_reason}"]
    remaining = scenario.duration.total_seconds() - elapsed
    if remaining > 0:
        lines.append(wait(remaining))
    lines += [":as alice", "/incident drill end", "/incident postmortem", ":wait 2s"]
    return lines


def run_drill(scenario_name: str, speed: float, database_path: str = "warroom-sandbox.db",
              out: TextIO = sys.stdout) -> int:
    """`warroom drill run`: play a drill in the sandbox and leave its scorecard and postmortem on disk."""
    from sqlalchemy import select

    from bot import drills
    from bot.db import make_engine, make_session_factory
    from bot.models import Drill
    from bot.playbook import load_playbook
    from bot.render import render_markdown
    from bot.scenarios import default_folder, load_scenarios

    playbook = load_playbook()
    catalog = load_scenarios(default_folder(), playbook)
    scenario = catalog.scenarios.get(scenario_name)
    if scenario is None:
        reason = catalog.broken.get(f"{scenario_name}.yaml")
        print(f"warroom: scenario {scenario_name!r} " + (f"could not be loaded: {reason}" if reason else
              f"does not exist; there are {', '.join(catalog.scenarios)}"), file=sys.stderr)
        return 2
    if not 1 <= speed <= drills.MAX_SPEED:
        print(f"warroom: --speed is 1 to {drills.MAX_SPEED:g}, not {speed:g}", file=sys.stderr)
        return 2
    status = run_sandbox(database_path, lines=drill_script(scenario, playbook, speed), out=out)
    engine = make_engine(f"sqlite:///{Path(database_path).resolve()}")
    try:
        with make_session_factory(engine)() as session:
            drill = session.scalars(select(Drill).order_by(Drill.id.desc()).limit(1)).one()
            scorecard, reference = drills.scorecard_of(drill), drill.incident.reference
    finally:
        engine.dispose()
    files = Path(database_path).resolve().with_name("warroom-sandbox-files")
    files.mkdir(parents=True, exist_ok=True)
    path = files / f"{reference.lower()}-drill-scorecard.md"
    path.write_text(render_markdown("drill_scorecard.md.j2", scorecard=scorecard, scenario=scenario,
                                    reference=reference, speed=speed))
    print(f"\nScorecard: {path}\nPostmortem draft: {files / (reference.lower() + '-postmortem.md')}", file=out)
    return status
