"""`warroom` command line: serve the bot, migrate its database, or try it in the sandbox."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from bot.export import RecordError
from bot.playbook import PlaybookError
from bot.settings import SettingsError
from bot.settings import load_settings as _read_settings


def _fail(message: str) -> int:
    print(f"warroom: {message}", file=sys.stderr)
    return 2


def load_settings():
    """The settings, with their secret values kept out of every log line from here on."""
    from bot.observability import redact_secrets_in_logs, settings_secrets

    settings = _read_settings()
    redact_secrets_in_logs(settings_secrets(settings))
    return settings


def cmd_migrate(args) -> int:
    from bot.migrate import upgrade_to_head

    settings = load_settings()
    upgrade_to_head(settings.database_url)
    print(f"warroom: database is at the latest schema ({_display_url(settings.database_url)})")
    return 0


def cmd_serve(args) -> int:
    from bot import server
    from bot.migrate import pending_migrations
    from bot.observability import configure_logging, settings_secrets
    from bot.runtime import Runtime

    settings = load_settings()
    settings.require_slack_credentials(socket_mode=args.socket)
    # From here on the process logs one JSON object a line (or text), with request and incident ids.
    configure_logging(getattr(args, "log_format", None) or settings.warroom_log_format, settings_secrets(settings))
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # not two lines a tick; warnings stay
    cpu = args.cpu if getattr(args, "cpu", None) is not None else settings.warroom_cpu
    if cpu is not None:
        pin_to_one_cpu(cpu)  # before the server, the ticker and the listener pools start their threads
    runtime = Runtime.from_settings(settings)
    problem = pending_migrations(runtime.engine)
    if problem:
        return _fail(f"{problem}; run `warroom migrate` first ({_display_url(settings.database_url)})")
    if args.socket:
        server.serve_socket_mode(runtime)
    else:
        server.serve_http(runtime, args.host or settings.warroom_host, args.port or settings.warroom_port)
    return 0


def pin_to_one_cpu(cpu: int) -> None:
    """Keep this process (every thread it has or will start) on one CPU; see Settings.warroom_cpu."""
    if not hasattr(os, "sched_setaffinity"):
        raise SettingsError(f"cannot pin to CPU {cpu} (WARROOM_CPU, --cpu): this system has no CPU "
                            "affinity; leave it unset")
    allowed = sorted(os.sched_getaffinity(0))
    if cpu not in allowed:
        raise SettingsError(f"cannot pin to CPU {cpu} (WARROOM_CPU, --cpu): this process may only run on "
                            f"CPU {', '.join(map(str, allowed))}; pick one of them, or leave it unset")
    for thread_id in os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else [0]:
        os.sched_setaffinity(int(thread_id), {cpu})
    logging.getLogger("bot.cli").info("pinned to CPU %d", cpu)


def cmd_sandbox(args) -> int:
    from bot.sandbox import run_sandbox

    return run_sandbox(database_path=args.database, user=args.user)


def cmd_drill_run(args) -> int:
    from bot.sandbox import run_drill

    return run_drill(args.scenario, args.speed, database_path=args.database)


def cmd_start(args) -> int:
    """What the README's run command does: the real bot with Slack tokens, the sandbox without."""
    settings = load_settings()
    if settings.slack_bot_token is None:
        print("warroom: no SLACK_BOT_TOKEN set, starting the offline sandbox "
              "(set the Slack tokens to serve a real workspace)", file=sys.stderr)
        return cmd_sandbox(args)
    cmd_migrate(args)
    args.socket = settings.slack_app_token is not None and settings.slack_signing_secret is None
    return cmd_serve(args)


def _write_out(content: str, output: str | None, what: str) -> int:
    """To the file asked for, or standard output; the file is UTF-8 whatever the locale."""
    if output:
        with open(output, "w", encoding="utf-8", newline="") as handle:
            handle.write(content)
        print(f"warroom: wrote {what} to {output}", file=sys.stderr)
    else:
        sys.stdout.reconfigure(encoding="utf-8")
        sys.stdout.write(content)
    return 0


def _read_record(reference: str, with_playbook_facts: bool = False):
    """The incident's record, and what the playbook recorded for it when asked for (else None)."""
    from bot import export, postmortem
    from bot.runtime import Runtime

    number = export.parse_reference(reference)
    runtime = Runtime.from_settings(load_settings())
    with runtime.transaction() as session:
        record = export.read_record(session, number=number)
        facts = (postmortem.read_playbook_facts(session, record.incident["id"], runtime.playbook)
                 if with_playbook_facts else None)
    return record, facts


def cmd_export(args) -> int:
    from bot import export
    from bot.db import utcnow

    record, _ = _read_record(args.incident)
    return _write_out(export.render_export(record, args.format, {}, utcnow()), args.output,
                      f"the {args.format} timeline of {record.incident['reference']}")


def cmd_postmortem(args) -> int:
    from bot import postmortem
    from bot.db import utcnow

    record, facts = _read_record(args.incident, with_playbook_facts=True)
    return _write_out(postmortem.render_postmortem(record, {}, utcnow(), facts), args.output,
                      f"the postmortem draft of {record.incident['reference']}")


def cmd_actions(args) -> int:
    from bot import actions
    from bot.db import utcnow
    from bot.runtime import Runtime

    today = utcnow().date()
    runtime = Runtime.from_settings(load_settings())
    with runtime.transaction() as session:
        listed = actions.all_actions(session, overdue_on=today if args.overdue else None)
    if not listed:
        print("No overdue corrective actions." if args.overdue else "No corrective actions.")
        return 0
    for action in listed:
        late = f"  OVERDUE {(today - action.due_on).days}d" if action.overdue(today) else ""
        verify = action.verification or "(no verification)"
        print(f"{action.reference:<14} due {action.due_on.isoformat()}  {action.state:<8} owner {action.owner_id:<12}"
              f" {action.text}  | verify: {verify}{late}")
    return 0


def cmd_readiness(args) -> int:
    import re
    from datetime import date

    from bot import readiness
    from bot.db import utcnow
    from bot.runtime import Runtime

    since = None
    if args.since is not None:
        try:
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", args.since):
                raise ValueError(args.since)
            since = date.fromisoformat(args.since)
        except ValueError:
            return _fail(f"{args.since!r} is not a date; write YYYY-MM-DD")
    runtime = Runtime.from_settings(load_settings())
    with runtime.transaction() as session:
        report = readiness.build_report(session, since, utcnow())
    try:
        paths = readiness.write_report(report, args.output)
    except OSError as exc:
        return _fail(f"cannot write the report to {args.output}: {exc.strerror or exc}")
    for path in paths:
        print(path)
    return 0


def _display_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="warroom", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve Slack's requests (HTTP on POST /slack/events, or Socket Mode)")
    serve.add_argument("--host", help="address to bind (default WARROOM_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default WARROOM_PORT or 3000)")
    serve.add_argument("--socket", action="store_true", help="use Socket Mode (needs SLACK_APP_TOKEN)")
    serve.add_argument("--cpu", type=int, help="pin the process to this CPU (default WARROOM_CPU or not pinned)")
    serve.add_argument("--log-format", choices=("json", "text"),
                       help="log lines as JSON objects or plain text (default WARROOM_LOG_FORMAT or json)")
    serve.set_defaults(func=cmd_serve)

    migrate = sub.add_parser("migrate", help="bring the database to the latest schema")
    migrate.set_defaults(func=cmd_migrate)

    for name, func, text in (
        ("export", cmd_export, "write an incident's timeline as Markdown, JSON or CSV"),
        ("postmortem", cmd_postmortem, "write an incident's postmortem draft (Markdown)"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("incident", help="the incident, like INC-42")
        if name == "export":
            command.add_argument("--format", choices=("md", "json", "csv"), default="md", help="default: md")
        command.add_argument("--output", "-o", help="file to write (default: standard output)")
        command.set_defaults(func=func)

    actions = sub.add_parser("actions", help="list corrective actions across incidents")
    actions.add_argument("--overdue", action="store_true", help="only those past their due date and not done")
    actions.set_defaults(func=cmd_actions)

    ready = sub.add_parser("readiness", help="write the readiness report (Markdown and a PNG chart) of real incidents")
    ready.add_argument("--since", help="only incidents declared (and drills started) on or after this YYYY-MM-DD")
    ready.add_argument("--output", "-o", default=".", help="folder for readiness.md and readiness.png (default: .)")
    ready.set_defaults(func=cmd_readiness)

    drill = sub.add_parser("drill", help="tabletop drills in the sandbox")
    drill_sub = drill.add_subparsers(dest="drill_command", required=True)
    drill_run = drill_sub.add_parser("run", help="play a drill in the sandbox; leaves its scorecard and postmortem")
    drill_run.add_argument("scenario", help="a scenario name (file name in scenarios/ without .yaml)")
    drill_run.add_argument("--speed", type=float, default=60.0, help="times real time (default 60)")
    drill_run.add_argument("--database", default="warroom-sandbox.db", help="SQLite file for the sandbox")
    drill_run.set_defaults(func=cmd_drill_run)

    for name, func, text in (
        ("sandbox", cmd_sandbox, "try the bot offline: a local Slack stand-in and a terminal"),
        ("start", cmd_start, "serve with Slack tokens, or open the sandbox without them"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("--database", default="warroom-sandbox.db", help="SQLite file for the sandbox")
        command.add_argument("--user", default="alice", help="who you are in the sandbox")
        command.add_argument("--host")
        command.add_argument("--port", type=int)
        command.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (SettingsError, PlaybookError, RecordError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
