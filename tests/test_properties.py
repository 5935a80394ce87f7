"""Property-based tests (hypothesis): the /incident parser, and the running bot end to end.

The contract: arbitrary text, unicode, 4,000-character inputs, mrkdwn control sequences,
SQL-looking text, forged, stale and replayed signatures, malformed payloads and events for
unknown channels. No unhandled error; every refusal says what was wrong; nothing is written for
an invalid request; nothing a person typed can ping anyone.

End-to-end tests run on SQLite and on PostgreSQL like the rest of the suite (see conftest.py).
Example counts come from hypothesis profiles: WARROOM_HYPOTHESIS=ci (the default) keeps this file
quick; WARROOM_HYPOTHESIS=thorough runs about ten times as many examples.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import time
from datetime import date, datetime, timedelta, timezone
from urllib.parse import quote, urlencode

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from bot import redaction
from bot.errors import UsageError
from bot.incidents import MARKS, ROLES, STATUSES, TITLE_MAX_CHARS
from bot.playbook import load_playbook
from bot.render import escape_mrkdwn, render
from bot.slack_standin.blockkit import MENTION_PATTERN
from bot.slack_standin.server import APP_ID, BOT_USER_ID, TEAM_DOMAIN, TEAM_ID
from bot.slack_standin.simulator import FORM, JSON
from commands import parsing
from commands.messages import SECTION_MAX_CHARS, fit_sections
from commands.router import ALREADY_HANDLED, INTERNAL_ERROR
from tests.conftest import SIGNING_SECRET, TABLES_CHILD_FIRST, eventually, open_incident

ALICE, BOB, CAROL, DAVE = "U0ALICE", "U0BOB", "U0CAROL", "U0DAVE"
HUMANS = (ALICE, BOB, CAROL, DAVE)
GENERAL = "C0GENERAL"
PLAYBOOK = load_playbook()  # the default playbook, which the test bot runs
ACK_SECONDS = 3.0  # Slack gives up on an ack after 3 seconds

# ------------------------------------------------------------------------------------ profiles

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
settings.register_profile("warroom-parser-ci", max_examples=400, deadline=None, suppress_health_check=_QUIET)
settings.register_profile("warroom-parser-thorough", max_examples=3000, deadline=None, suppress_health_check=_QUIET)
# Function-scoped fixtures (a clean workspace per test) are shared by a test's examples on purpose:
# each example checks its own before/after, and state piling up is part of what is tested.
_E2E = {"deadline": None, "print_blob": True,
        "suppress_health_check": [*_QUIET, HealthCheck.function_scoped_fixture]}
settings.register_profile("warroom-e2e-ci", max_examples=25, **_E2E)
settings.register_profile("warroom-e2e-thorough", max_examples=250, **_E2E)
PROFILE = os.environ.get("WARROOM_HYPOTHESIS", "ci")
PARSER = settings.get_profile(f"warroom-parser-{PROFILE}")
E2E = settings.get_profile(f"warroom-e2e-{PROFILE}")


def fewer(profile: settings, divisor: int) -> settings:
    return settings(profile, max_examples=max(5, profile.max_examples // divisor))


# ---------------------------------------------------------------------------------- strategies

# Slack sends UTF-8: any code point but surrogates.
CHARACTERS = st.characters(codec="utf-8")
MRKDWN = [
    "<!channel>", "<!here>", "<!everyone>", "<!here|here>", "<!channel|channel>", "<!subteam^S0TEAM|team>",
    "<!subteam^S0TEAM>", "<@U123>", "<@U0BOB|bob>", "<@W0CAROL>", "<#C1|x>", "<#C0GENERAL>",
    "<http://x|y>", "<https://evil.test/a?b=1&amp;c=2|click here>", "<mailto:a@b.co|a@b.co>",
    "<!date^1392734382^{date}|Feb 18>", "*", "_", "~", "`", "```", "*bold*", "_it_", "~s~", "> quote",
    "&lt;", "&gt;", "&amp;", "&lt;!channel&gt;", "&lt;@U0BOB&gt;", "&amp;lt;", "@channel", "@here", "@everyone",
    "<", ">", "&", "\n", "\t", "\u200b", "\u202e", "\x00",
]
SQL = [
    "'; DROP TABLE incident; --", "\" OR 1=1 --", "1; DELETE FROM timeline_entry", "' OR ''='",
    "') UNION SELECT * FROM processed_event --", "%", "_%", "\\", "$$", "NULL", "`rm -rf /`", "{{ 7*7 }}", "{% raw %}",
]
FUTURE = "2099-01-01"  # due dates far enough out that no reminder falls due during a test
KEYWORDS = sorted({
    *parsing.USAGE, "sev1", "sev2", "sev3", "sev4", "SEV-2", "sev0", "sev7", "sev", "1", "2", "3", "4", "0", "9",
    *STATUSES, *ROLES, *MARKS, "done", "verified", "verify:", "force:", "owner:", "off", "on", "reversible",
    "irreversible", "decide", "notify", "not", "yes", "no", "unknown", "md", "json", "csv", "list", "start", "next",
    "end", "--speed", "--speed=nan", "--speed 1e309",
    *PLAYBOOK.taxonomy.drivers, *PLAYBOOK.taxonomy.failure_modes, *PLAYBOOK.taxonomy.aliases, *PLAYBOOK.flags,
    *PLAYBOOK.evidence.items, *PLAYBOOK.impact, *PLAYBOOK.notification.questions,
    *(f"{audience}:" for audience in PLAYBOOK.audiences), "Status:",
    FUTURE, "0001-01-01", "9999-12-31", "2026-02-30", "20991204",
    "14:05", "00:00", "23:59:59", "24:00", "0001-01-01T00:00+01:00", "9999-12-31T23:59-01:00",
    "2026-11-23T15:05+01:00", "2020-01-01 10:00", "14:05 UTC",
    "A1", "C1", "a2", "99999999999999999999", "1" * 40, "\u0661", "\u0663", "sev\u0663", "\U0001d7d9",
    "30s", "15m", "1h30m", "2d", "0s", "365d", "366d", "999999999d", "9999999999d",
    "<@U0BOB>", "<@U0CAROL|carol>", "<@W0DAVE>", "<@u0bob>", "<@U" + "A" * 40 + ">", "@bob",
    "payload", "payload=", "payload={", "ssl_check=1",  # what Bolt's body parsing once tripped on
})
WORD = st.one_of(st.text(CHARACTERS, min_size=1, max_size=20), st.sampled_from(MRKDWN), st.sampled_from(SQL),
                 st.sampled_from(KEYWORDS))
COMPOSED = st.lists(WORD, min_size=1, max_size=12).map(" ".join)
# 3,000-4,000 characters (the contract's long inputs): a piece repeated, which also stresses
# the regular expressions with long runs of the same thing.
LONG = st.builds(lambda piece, size: (piece * (size // len(piece) + 1))[:size],
                 st.one_of(WORD, COMPOSED.map(lambda text: text + " ")), st.integers(3000, 4000))
ARGS = st.one_of(st.text(CHARACTERS, max_size=200), COMPOSED, LONG,
                 st.tuples(st.sampled_from(KEYWORDS), st.sampled_from(KEYWORDS), COMPOSED).map(" ".join))

# ------------------------------------------------------------------------------ parser properties

PARSERS = {
    "parse_declare": parsing.parse_declare,
    "parse_title": lambda args: parsing.parse_title("declare", args),
    "parse_severity": lambda args: parsing.parse_severity("sev", args),
    "parse_role": parsing.parse_role,
    "parse_entry decision": lambda args: parsing.parse_entry("decision", args),
    "parse_entry note": lambda args: parsing.parse_entry("note", args),
    "parse_sev": parsing.parse_sev,
    "parse_keyword": lambda args: parsing.parse_keyword("status", args, STATUSES, not_a="a status",
                                                        missing="Give the new status"),
    "parse_status": parsing.parse_status,
    "parse_drill": lambda args: parsing.parse_drill(args),
    "parse_postmortem_done": lambda args: parsing.parse_postmortem_done(args),
    "parse_no_arguments": lambda args: parsing.parse_no_arguments("timeline", args),
    "parse_duration_argument cadence": lambda args: parsing.parse_duration_argument("cadence", args, allow_off=True),
    "parse_duration_argument snooze": lambda args: parsing.parse_duration_argument("snooze", args, allow_off=False),
    "parse_mention": lambda args: parsing.parse_mention("action", args, "owner"),
    "parse_utc_time": lambda args: parsing.parse_utc_time("mark", args),
    "parse_mark": parsing.parse_mark,
    "parse_action": parsing.parse_action,
    "parse_export_format": parsing.parse_export_format,
    "parse_classify": lambda args: parsing.parse_classify(args, PLAYBOOK.taxonomy),
    "parse_flag": lambda args: parsing.parse_flag(args, PLAYBOOK.flags),
    "parse_checklist_entry": lambda args: parsing.parse_checklist_entry(
        "impact", args, PLAYBOOK.impact, not_a="an impact question", what="answer"),
    "parse_evidence": lambda args: parsing.parse_evidence(args, PLAYBOOK.evidence.items),
    "parse_contain": parsing.parse_contain,
    "parse_impact": lambda args: parsing.parse_impact(args, PLAYBOOK.impact),
    "parse_notify": lambda args: parsing.parse_notify(args, PLAYBOOK.notification.questions),
    "parse_update": lambda args: parsing.parse_update(args, PLAYBOOK.audiences),
}
# Only the parsers this version of commands.parsing has (parse_drill is new).
PARSER_CASES = {name: parse for name, parse in PARSERS.items() if hasattr(parsing, name.split()[0])}
MEASURING_KEY = redaction.derive_key("tests/properties")
USER_ID = re.compile(r"^[UW][A-Z0-9]+$")
ID_COLUMN_CHARS = 32  # user id columns (declared_by, owner_id, user_id, ...)
INTEGER_MAX = 2**31 - 1  # PostgreSQL INTEGER


def test_every_parser_is_under_property_test():
    public = {name for name, value in vars(parsing).items()
              if name.startswith("parse_") and callable(value) and getattr(value, "__module__", "") == parsing.__name__}
    covered = {name.split()[0] for name in PARSERS}
    assert public <= covered, f"add {sorted(public - covered)} to PARSERS in tests/test_properties.py"


def example_each(inputs: list[str]):
    def decorate(test):
        for value in reversed(inputs):
            test = example(args=value)(test)
        return test
    return decorate


def stored(text: str) -> str:
    """What the services store for `text`: secrets and personal data replaced by placeholders."""
    return redaction.redact(text, key=MEASURING_KEY).text


def check_refusal(refusal: UsageError) -> None:
    """A refusal says what was wrong and what to type instead, and cannot ping anyone."""
    assert type(refusal) is UsageError
    assert refusal.message.strip(), "a refusal must say what was wrong"
    assert refusal.hint.startswith("Usage: `/incident "), f"the hint must show what to type: {refusal.hint!r}"
    shown = render("error.slack.j2", message=refusal.message, hint=refusal.hint)
    assert "<" not in shown, f"everything in a refusal is escaped for mrkdwn: {shown!r}"
    assert not MENTION_PATTERN.findall(shown)


def check_request(value, field: str = "") -> None:
    """A parsed request holds only what the database and Slack accept."""
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            check_request(getattr(value, name), name)
    elif isinstance(value, (tuple, list)):
        for item in value:
            check_request(item, field)
    elif isinstance(value, str):
        assert "\x00" not in value, f"{field}: PostgreSQL cannot store NUL"
        assert len(escape_mrkdwn(stored(value))) <= parsing.ENTRY_MAX_CHARS, f"{field}: too long for a section"
        if field in ("user_id", "owner_id"):
            assert USER_ID.match(value) and len(value) <= ID_COLUMN_CHARS, f"{field}: {value!r} is no user id"
        if field == "title":
            assert value and value == " ".join(value.split())
            assert len(stored(value)) <= TITLE_MAX_CHARS, "the title, as stored, must fit"
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        assert -INTEGER_MAX - 1 <= value <= INTEGER_MAX, f"{field}: {value} does not fit an INTEGER column"
    elif isinstance(value, float):
        pass
    elif isinstance(value, datetime):
        assert value.utcoffset() == timedelta(0), f"{field}: times are aware UTC"
    elif isinstance(value, date):
        pass
    elif isinstance(value, timedelta):
        now = datetime.now(timezone.utc)
        assert value > timedelta(0)
        now + value + value  # the next update, and its escalation after it: no OverflowError
    else:
        raise AssertionError(f"{field}: unexpected {type(value).__name__} in a parsed request")


# Inputs that broke a parser once: each is tried on every run, whatever the random examples are.
REGRESSIONS = [
    "sev1 a\x00b",  # PostgreSQL refuses NUL: an internal error
    "detected 0001-01-01T00:00+01:00", "0001-01-01T00:00+01:00",  # OverflowError converting to UTC
    "9999999999d", "999999999d",  # OverflowError in timedelta, and later in the clock arithmetic
    "done 99999999999999999999", "verified 99999999999999999999 it works",  # past PostgreSQL's INTEGER
    "99999999999999999999 verify: the dashboard",
    "sev1 " + " ".join(["a@b.co"] * 21),  # a title that fits, until each address is a placeholder
    "a@b.co " * 350,  # an entry that fits, until redacted: too long for a section, and slow
    "ic <@U" + "A" * 40 + ">",  # a user id longer than the id columns
    "sev" + "1" * 4400,  # int() refuses 4,301+ digits with ValueError
]


@PARSER
@given(args=ARGS)
@example_each(REGRESSIONS)
def test_parsers_return_a_valid_request_or_say_what_to_type(args):
    # Every parser on each input: the examples are generated once, which is most of the time.
    for name, parse in PARSER_CASES.items():
        try:
            try:
                request = parse(args)
            except UsageError as refusal:
                check_refusal(refusal)
            else:
                check_request(request)
        except Exception as failure:
            raise AssertionError(f"{name}: {failure!r}") from failure


@PARSER
@given(text=st.one_of(ARGS, st.text(CHARACTERS)))
def test_split_subcommand_never_raises(text):
    head, rest = parsing.split_subcommand(text)
    assert " " not in head and rest == rest.strip()


@PARSER
@given(subcommand=st.sampled_from(sorted(parsing.USAGE)), rest=ARGS)
def test_split_subcommand_finds_the_subcommand_whatever_follows(subcommand, rest):
    assert parsing.split_subcommand(f"{subcommand} {rest}") == (subcommand, rest.strip())


@PARSER
@given(raw=ARGS)
def test_human_text_never_raises_and_drops_nul(raw):
    assert "\x00" not in parsing.human_text(raw)


@PARSER
@given(text=st.one_of(LONG, ARGS).map(escape_mrkdwn).filter(str.strip), repeat=st.integers(1, 4),
       tail=st.sampled_from(["", " ", "\n", " " * 5000]))
def test_long_messages_are_cut_into_sections_slack_accepts(text, repeat, tail):
    text = " ".join([text] * repeat) + tail  # as long as four fields of a message, and then some
    pieces = fit_sections(text)
    assert all(piece.strip() and len(piece) <= SECTION_MAX_CHARS for piece in pieces), [len(p) for p in pieces]
    assert "".join("".join(pieces).split()) == "".join(text.split()), "nothing lost, nothing added"
    for piece in pieces:  # never cut inside an entity: every & still starts a whole one
        assert "&" not in re.sub(r"&(amp|lt|gt);", "", piece), piece[-20:]


# ----------------------------------------------------------------------------- end to end: helpers

def said(result) -> str:
    """What the ack showed the person: Bolt answers plain text, or JSON when there are blocks."""
    if isinstance(result.body, dict):
        return result.body.get("text", "") or json.dumps(result.body)
    return result.body or ""


def refused(ack: str) -> bool:
    return ack.startswith(":warning:")  # templates/error.slack.j2


COUNTS_SQL = "SELECT " + ", ".join(f"(SELECT count(*) FROM {table}) AS {table}" for table in TABLES_CHILD_FIRST) \
    + ", (SELECT value FROM counter WHERE name = 'incident') AS incident_counter"


def table_counts(database) -> dict:
    """Rows in every table (and the incident counter), in one round trip."""
    return dict(database.rows(COUNTS_SQL)[0])


class Watch:
    """What a test's examples must not cause: tracebacks in the bot's log, or pings nobody meant."""

    def __init__(self, bot, standin):
        self.log_path = bot.log_path
        self.offset = self.log_path.stat().st_size
        self.standin = standin
        # Whom the bot may mention: the person acting (and the declarer: Alice), and whoever a
        # command names on purpose (a role's holder, an action's or a decision's owner).
        self.intended = {ALICE}

    def new_log(self) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(self.offset)
            new = log.read()
        self.offset += len(new)
        return new.decode("utf-8", "replace")

    def assert_no_traceback(self) -> None:
        text = self.new_log()
        assert "Traceback" not in text, text[-4000:]

    def allowed(self, mention: str) -> bool:
        return mention.startswith("<@") and mention[2:-1] in self.intended

    def assert_nobody_pinged(self, ack: str = "") -> None:
        unexpected = [m for m in (f"<{found}>" for found in MENTION_PATTERN.findall(ack)) if not self.allowed(m)]
        assert not unexpected, f"the ack mentions {unexpected}: {ack!r}"
        conversations = self.standin.channels() + self.standin.ims()
        posted = [m for c in conversations for m in self.standin.messages(c["id"]) if m.get("user") not in HUMANS]
        for message in posted + self.standin.ephemerals():
            unexpected = [m for m in message["mentions"] if not self.allowed(m)]
            assert not unexpected, f"the bot pinged {unexpected}: {message.get('text')!r}"


@pytest.fixture
def watch(slack, bot, standin):
    return Watch(bot, standin)


@pytest.fixture
def elsewhere(slack, standin):
    """A channel people talk in that the bot is not in and knows nothing about."""
    return standin.create_channel("somewhere-else", list(HUMANS))["id"]


@pytest.fixture
def war_room(slack, standin, database):
    """INC-1, declared through the services, with a war room the bot and the seeded people are in."""
    channel = standin.create_channel("inc-1-properties-under-test", [*HUMANS, BOT_USER_ID])["id"]
    open_incident(database, PLAYBOOK, title="Properties under test", severity=2, channel=channel)
    return channel


def intended_by(subcommand: str, args: str) -> set[str]:
    """The people a command names on purpose, if the bot takes it."""
    parse = {"role": lambda: parsing.parse_role(args).user_id,
             "action": lambda: getattr(parsing.parse_action(args), "owner_id", None),
             "decision": lambda: getattr(parsing.parse_entry("decision", args), "owner_id", None)}.get(subcommand)
    try:
        named = parse() if parse else None
    except UsageError:
        return set()
    return {named} if named else set()


def run_command(slack, standin, database, watch: Watch, channel: str, subcommand: str, args: str) -> str:
    """Send `/incident <subcommand> <args>`; check the properties every command must have."""
    before = table_counts(database)
    posts_before = len(standin.calls("chat.postMessage"))
    started = time.monotonic()
    result = slack.command(ALICE, channel, f"{subcommand} {args}")
    elapsed = time.monotonic() - started
    assert result.status == 200 and elapsed < ACK_SECONDS, \
        f"HTTP {result.status} after {elapsed:.2f}s: {result.body!r}"  # None: no answer within Slack's 3 s
    ack = said(result)
    assert "internal error" not in ack and ack != INTERNAL_ERROR, ack
    assert ack != ALREADY_HANDLED, "a new invocation was taken for a repeated one"
    if refused(ack):
        assert ack.removeprefix(":warning:").strip(), "a refusal must say what was wrong"
        assert table_counts(database) == before, f"refused, but written: {ack!r}"
        assert len(standin.calls("chat.postMessage")) == posts_before, f"refused, but posted: {ack!r}"
    else:
        watch.intended |= intended_by(subcommand, args)
        standin.wait_until_quiet()  # the room hears of it after the ack; the next example starts after
    watch.assert_nobody_pinged(ack)
    watch.assert_no_traceback()
    return ack


E2E_LEADS = {
    "declare": ["sev1", "sev2", "sev3", "sev4", "SEV-2", "sev7", "sev"],
    "decision": ["owner:", "owner: <@U0BOB>", "owner: <@U0CAROL|carol>"],
    "note": ["<!channel>", "&lt;!here&gt;"],
    "role": [*ROLES, "<@U0BOB>", "<@U0CAROL|carol>", "<@W0DAVE>", "<!channel>", "<@U" + "A" * 40 + ">"],
    "sev": ["1", "2", "3", "4", "sev1", "0", "5", "99999999999999999999"],
    "status": [*STATUSES, "force:", "resolved force:"],
    "update": [*(f"{audience}:" for audience in PLAYBOOK.audiences), "Status:"],
    "action": ["<@U0BOB>", "<@U0CAROL|carol>", FUTURE, "9999-12-31", "0001-01-01", "done", "verified", "A1", "1",
               "verify:", "99999999999999999999"],
    "evidence": [*PLAYBOOK.evidence.items],
    "classify": [*PLAYBOOK.taxonomy.drivers, *PLAYBOOK.taxonomy.failure_modes, *PLAYBOOK.taxonomy.aliases],
    "contain": ["verified", "C1", "1", "reversible", "irreversible", "verify:", "99999999999999999999"],
    "mark": [*MARKS, "2020-01-01 10:00", "00:00", "0001-01-01T00:00+01:00", "9999-12-31T23:59-01:00", "14:05 UTC"],
}


def e2e_args(subcommand: str):
    """Anything, and things shaped like the subcommand's own arguments (so some are taken)."""
    leads = st.lists(st.sampled_from(E2E_LEADS[subcommand]), min_size=1, max_size=3).map(" ".join)
    return st.one_of(ARGS, st.tuples(leads, ARGS).map(" ".join),
                     st.tuples(leads, st.sampled_from(E2E_LEADS[subcommand]), ARGS).map(" ".join))


# ---------------------------------------------------------------- end to end: whatever people type

@pytest.mark.parametrize("subcommand", list(E2E_LEADS))
@E2E
@given(data=st.data())
def test_any_text_after_a_subcommand_is_answered_in_time_and_refusals_write_nothing(
        subcommand, slack, standin, database, war_room, elsewhere, watch, data):
    args = data.draw(e2e_args(subcommand), label="args")
    channel = data.draw(st.sampled_from([war_room, GENERAL, elsewhere]), label="channel")
    run_command(slack, standin, database, watch, channel, subcommand, args)


UNKNOWN_SUBCOMMAND = st.one_of(st.text(CHARACTERS.filter(lambda c: not c.isspace()), min_size=1, max_size=30),
                               st.sampled_from(MRKDWN + SQL + KEYWORDS).filter(lambda w: w.strip())).filter(
    lambda word: parsing.split_subcommand(f"{word} x")[0] not in parsing.USAGE)


@E2E
@given(data=st.data())
def test_unknown_subcommands_are_refused_with_the_way_to_the_list(slack, standin, database, war_room, elsewhere,
                                                                   watch, data):
    word = data.draw(UNKNOWN_SUBCOMMAND, label="word")
    args = data.draw(ARGS, label="args")
    channel = data.draw(st.sampled_from([war_room, GENERAL, elsewhere]), label="channel")
    ack = run_command(slack, standin, database, watch, channel, word, args)
    assert refused(ack) and "is not an /incident command" in ack and "`/incident help`" in ack


def test_typed_mentions_of_everyone_stay_text_in_every_room_message(slack, standin, database, war_room, watch):
    """The mrkdwn control sequences through every subcommand that posts what was typed, at once."""
    hostile = " ".join(MRKDWN[:20])
    for subcommand, args in [("declare", f"sev2 {' '.join(MRKDWN[:8])}"), ("decision", hostile), ("note", hostile),
                             ("sev", f"1 {hostile}"), ("status", f"identified {hostile}"),
                             ("update", hostile), ("update", f"executives: {hostile}"),
                             ("action", f"<@U0CAROL> {FUTURE} {hostile} verify: {hostile}"),
                             ("evidence", f"trace {hostile}"), ("contain", f"{hostile} verify: {hostile}"),
                             ("classify", "data leakage")]:
        ack = run_command(slack, standin, database, watch, war_room, subcommand, args)
        assert not refused(ack), ack
    assert watch.intended == {ALICE, CAROL}
    assert len(standin.messages(war_room)) >= 10


# Commands that broke the bot once (each fixed; see the comments at the fixes).
E2E_REGRESSIONS = [
    ("note", "a\x00b"),  # PostgreSQL: internal error
    ("declare", "sev2 " + " ".join(["a@b.co"] * 21)),  # PostgreSQL: the redacted title overflowed its column
    ("action", "done 99999999999999999999"),  # PostgreSQL: internal error; SQLite: HTTP 500
    ("contain", "verified 99999999999999999999 it held"),
    ("action", "99999999999999999999 verify: the dashboard"),
    ("mark", "detected 0001-01-01T00:00+01:00"),  # HTTP 500 (OverflowError)
    ("role", "ic <@U" + "A" * 40 + ">"),  # PostgreSQL: internal error (id column)
    ("note", "a@b.co " * 350),  # no ack within 3 s (350 redactions), then too long for a section
    ("cadence", "999999999d"),  # OverflowError in the clock arithmetic
    ("snooze", "9999999999d"),  # OverflowError in the parser
]
SECTION_FILLERS = [  # taken: two long fields in one message, each within its limit
    ("action", f"<@U0BOB> {FUTURE} {'x' * 1800} verify: {'y' * 1800}"),
    ("contain", f"{'x' * 1800} verify: {'y' * 1800}"),
]


def test_commands_that_broke_the_bot_once_are_answered(slack, standin, database, war_room, watch):
    for subcommand, args in E2E_REGRESSIONS:
        run_command(slack, standin, database, watch, war_room, subcommand, args)
    for subcommand, args in SECTION_FILLERS:
        ack = run_command(slack, standin, database, watch, war_room, subcommand, args)
        assert not refused(ack), ack
        posted = standin.messages(war_room)[-1]
        shown = "".join(block["text"]["text"] for block in posted["blocks"])
        assert "x" * 1800 in shown and "y" * 1800 in shown
    assert not [r for r in standin.responses() if ":warning:" in r["payload"].get("text", "")], standin.responses()


# ----------------------------------------------------------------------- end to end: signatures

def command_body(standin, text: str, channel: str = GENERAL, user: str = ALICE, trigger_id: str | None = None) -> str:
    """A slash command's form body, as Slack sends it."""
    return urlencode({
        "token": "standin-verification-token", "team_id": TEAM_ID, "team_domain": TEAM_DOMAIN,
        "channel_id": channel, "channel_name": (standin.channel(channel) or {}).get("name", "unknown"),
        "user_id": user, "user_name": (standin.user(user) or {}).get("name", "unknown"),
        "command": "/incident", "text": text, "api_app_id": APP_ID, "is_enterprise_install": "false",
        "response_url": standin.response_url(standin.issue_response_url(user, channel)),
        "trigger_id": trigger_id or standin.issue_trigger(user),
    })


def post(slack, body: bytes | str, headers: dict) -> requests.Response:
    """POST to the bot's events URL with exactly these headers (no signing added)."""
    return requests.post(slack.bot_url, data=body.encode() if isinstance(body, str) else body,
                         headers=headers, timeout=ACK_SECONDS)


def signed_headers(body: bytes | str, content_type: str = FORM, *, secret: str = SIGNING_SECRET,
                   timestamp: str | None = None) -> dict:
    timestamp = str(int(time.time())) if timestamp is None else timestamp
    raw = body.encode() if isinstance(body, str) else body
    signature = "v0=" + hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + raw, hashlib.sha256).hexdigest()
    return {"Content-Type": content_type, "X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature}


def assert_refused_unauthenticated(response: requests.Response, database, before: dict, watch: Watch) -> None:
    assert response.status_code == 401, f"HTTP {response.status_code}: {response.text[:300]!r}"
    assert table_counts(database) == before
    watch.assert_no_traceback()


WRITING_TEXTS = ARGS.map(lambda text: f"declare sev1 Forged {text}")  # would declare, if let through
HEADER_TEXT = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80)  # what HTTP headers carry


@E2E
@given(text=WRITING_TEXTS, secret=st.text(CHARACTERS, min_size=1, max_size=64), garbage=HEADER_TEXT,
       forge=st.sampled_from(["wrong secret", "no secret", "random", "v1", "upper-case hex"]))
def test_forged_signatures_are_refused_and_write_nothing(slack, standin, database, watch, text, secret, garbage, forge):
    body = command_body(standin, text)
    headers = signed_headers(body, secret=secret if secret != SIGNING_SECRET else secret + "x")
    right = signed_headers(body)["X-Slack-Signature"]
    headers["X-Slack-Signature"] = {
        "wrong secret": headers["X-Slack-Signature"],
        "no secret": "v0=" + hashlib.sha256(f"v0:{headers['X-Slack-Request-Timestamp']}:{body}".encode()).hexdigest(),
        "random": garbage,
        "v1": "v1=" + right.removeprefix("v0="),
        "upper-case hex": "v0=" + right.removeprefix("v0=").upper(),
    }[forge]
    before = table_counts(database)
    assert_refused_unauthenticated(post(slack, body, headers), database, before, watch)


@E2E
@given(text=WRITING_TEXTS, skew=st.integers(6 * 60, 10**9), future=st.booleans())
def test_stale_or_future_timestamps_are_refused_and_write_nothing(slack, standin, database, watch, text, skew,
                                                                  future):
    body = command_body(standin, text)
    timestamp = str(int(time.time()) + (skew if future else -skew))
    before = table_counts(database)
    assert_refused_unauthenticated(post(slack, body, signed_headers(body, timestamp=timestamp)), database, before,
                                   watch)


@pytest.mark.parametrize("missing", [["X-Slack-Signature"], ["X-Slack-Request-Timestamp"],
                                     ["X-Slack-Signature", "X-Slack-Request-Timestamp"]])
def test_missing_signature_headers_are_refused_and_write_nothing(slack, standin, database, watch, missing):
    body = command_body(standin, "declare sev1 Unsigned")
    headers = {name: value for name, value in signed_headers(body).items() if name not in missing}
    before = table_counts(database)
    assert_refused_unauthenticated(post(slack, body, headers), database, before, watch)


@E2E
@given(text=WRITING_TEXTS, where=st.floats(0, 1), change=st.text(CHARACTERS, min_size=1, max_size=5),
       how=st.sampled_from(["insert", "replace", "append", "truncate"]))
def test_a_body_altered_after_signing_is_refused_and_writes_nothing(slack, standin, database, watch, text, where,
                                                                    change, how):
    body = command_body(standin, text)
    headers = signed_headers(body)
    at = int(where * (len(body) - 1))
    altered = {"insert": body[:at] + quote(change) + body[at:],
               "replace": body[:at] + quote(change) + body[at + 1:],
               "append": body + "&text=" + quote(change),
               "truncate": body[:at]}[how]
    if altered == body:
        altered += "&x=1"
    before = table_counts(database)
    assert_refused_unauthenticated(post(slack, altered, headers), database, before, watch)


@fewer(E2E, 2)
@given(data=st.data())
def test_a_replayed_request_is_carried_out_once(slack, standin, database, war_room, watch, data):
    subcommand = data.draw(st.sampled_from(["decision", "note", "sev", "status", "evidence", "declare"]),
                           label="subcommand")
    args = data.draw(e2e_args(subcommand), label="args")
    body = command_body(standin, f"{subcommand} {args}", channel=war_room)
    headers = signed_headers(body)  # the very same bytes, timestamp and signature, twice
    before = table_counts(database)
    first = post(slack, body, headers)
    after_first = table_counts(database)
    again = post(slack, body, headers)
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert table_counts(database) == after_first, "the replay acted again"
    first_ack, again_ack = first.text, again.text
    if refused(first_ack):
        assert after_first == before and again_ack == first_ack
    else:
        assert ALREADY_HANDLED in again_ack or again_ack == first_ack, again_ack
        if after_first != before:  # it wrote: the replay must have been recognised
            assert ALREADY_HANDLED in again_ack
    standin.wait_until_quiet(quiet_for=0.2)
    watch.assert_no_traceback()


def test_a_replayed_decision_is_logged_once(slack, standin, database, war_room, watch):
    body = command_body(standin, "decision Roll back prompt template v14 to v13", channel=war_room)
    headers = signed_headers(body)
    assert post(slack, body, headers).status_code == 200
    replay = post(slack, body, headers)
    assert replay.status_code == 200 and "carried out once" in replay.text
    assert database.scalar("SELECT count(*) FROM timeline_entry WHERE kind = 'decision'") == 1


# -------------------------------------------------------------- end to end: malformed deliveries

def event_envelope(event) -> dict:
    return {"token": "standin-verification-token", "team_id": TEAM_ID, "api_app_id": APP_ID, "event": event,
            "type": "event_callback", "event_id": f"Ev{time.time_ns()}", "event_time": int(time.time()),
            "authorizations": [{"enterprise_id": None, "team_id": TEAM_ID, "user_id": BOT_USER_ID, "is_bot": True,
                                "is_enterprise_install": False}]}


def reaction(item, **fields) -> str:
    event = {"type": "reaction_added", "user": BOB, "reaction": "pushpin", "item": item, "event_ts": "1.1"}
    event.update(fields)
    return json.dumps(event_envelope({key: value for key, value in event.items() if value is not ...}))


def interaction(payload: dict) -> str:
    return urlencode({"payload": json.dumps(payload)})


ROOM = "{room}"  # replaced by the war room's id
MESSAGE_TS = "{ts}"  # replaced by the ts of a message in the war room
MALFORMED = [  # handled: (what, content type, body)
    ("form garbage", FORM, "\x00\xff garbage=&&&=%zz"),
    ("plain text", "text/plain", "hello"),
    ("no content type", "", urlencode({"command": "/incident", "text": "help", "user_id": ALICE,
                                       "channel_id": GENERAL})),
    ("empty form", FORM, ""),
    ("empty JSON", JSON, ""),
    ("a megabyte of form", FORM, "a=" + "x" * 1_000_000),
    ("a megabyte of JSON", JSON, json.dumps({"type": "event_callback", "event": {"type": "nope"}, "x": "x" * 1_000_000})),
    ("JSON command, every field", JSON, json.dumps({"command": "/incident", "text": "help", "user_id": ALICE,
                                                    "channel_id": GENERAL, "trigger_id": "1.2.3"})),
    ("form without command", FORM, urlencode({"text": "declare sev1 x", "user_id": ALICE, "channel_id": GENERAL})),
    ("another slash command", FORM, urlencode({"command": "/other", "text": "declare sev1 x", "user_id": ALICE,
                                               "channel_id": GENERAL})),
    ("payload={}", FORM, interaction({})),
    ("unknown button", FORM, interaction({"type": "block_actions", "user": {"id": ALICE}, "actions": [
        {"action_id": "nope", "type": "button"}]})),
    ("unknown view", FORM, interaction({"type": "view_submission", "user": {"id": ALICE},
                                        "view": {"type": "modal", "callback_id": "nope", "state": {"values": {}}}})),
    ("url_verification without challenge", JSON, json.dumps({"type": "url_verification"})),
    ("event_callback without event", JSON, json.dumps({"type": "event_callback", "event_id": "Ev1"})),
    ("event without type", JSON, json.dumps(event_envelope({"user": BOB}))),
    ("event of another type", JSON, json.dumps(event_envelope({"type": "member_joined_channel", "user": BOB}))),
    ("reaction, unknown channel", JSON, reaction({"type": "message", "channel": "C0NOPE", "ts": "1700000000.000100"})),
    ("reaction, not a war room", JSON, reaction({"type": "message", "channel": GENERAL, "ts": "1700000000.000100"})),
    ("reaction, unknown message", JSON, reaction({"type": "message", "channel": ROOM, "ts": "1700000000.000100"})),
    ("reaction, ts not a ts", JSON, reaction({"type": "message", "channel": ROOM, "ts": "nan"})),
    ("reaction, ts a number", JSON, reaction({"type": "message", "channel": ROOM, "ts": 1.5})),
    ("reaction, channel a list", JSON, reaction({"type": "message", "channel": [ROOM], "ts": MESSAGE_TS})),
    ("reaction, item a string", JSON, reaction("message")),
    ("reaction, no item", JSON, reaction(...)),
    ("reaction, no user", JSON, reaction({"type": "message", "channel": ROOM, "ts": MESSAGE_TS}, user=...)),
    ("reaction, user a list", JSON, reaction({"type": "message", "channel": ROOM, "ts": MESSAGE_TS}, user=[BOB])),
    ("reaction to a file", JSON, reaction({"type": "file", "file": "F1"})),
    ("reaction removed, no item", JSON, json.dumps(event_envelope({"type": "reaction_removed", "user": BOB}))),
    # Bolt could not read these (HTTP 500 and a traceback, signed or not) until bot/server.py caught it:
    ("invalid JSON", JSON, "{not json"),
    ("JSON list", JSON, "[1]"),
    ("JSON number", JSON, "1"),
    ("payload= invalid JSON", FORM, "payload=%7Bnot"),
    ("payload= a list", FORM, "payload=%5B1%5D"),
    ("event a string", JSON, json.dumps({"type": "event_callback", "event": "x"})),
    ("view without a type", FORM, interaction({"type": "view_submission", "user": {"id": ALICE},
                                               "view": {"callback_id": "nope"}})),
    ("authorizations a number", JSON, json.dumps({"type": "event_callback", "authorizations": 5,
                                                  "event": {"type": "reaction_added"}})),
    ("reaction, user a number", JSON, reaction({"type": "message", "channel": ROOM, "ts": MESSAGE_TS}, user=5)),
    # commands/router.py read these fields unchecked (HTTP 500) until it checked them:
    ("form command without user_id", FORM, urlencode({"command": "/incident", "text": "help",
                                                      "channel_id": GENERAL})),
    ("form command without channel_id", FORM, urlencode({"command": "/incident", "text": "help",
                                                         "user_id": ALICE})),
    ("JSON command without user_id", JSON, json.dumps({"command": "/incident", "text": "help",
                                                       "channel_id": GENERAL})),
    ("JSON command, user_id a list", JSON, json.dumps({"command": "/incident", "text": "declare sev1 x",
                                                       "user_id": [ALICE], "channel_id": GENERAL})),
    # commands/declare.py and commands/updates.py read these unchecked (HTTP 500, or a traceback after
    # the ack) until they checked them:
    ("declare form without state", FORM, interaction({
        "type": "view_submission", "user": {"id": ALICE}, "view": {"type": "modal", "callback_id": "declare_incident"}})),
    ("declare form, severity not a number", FORM, interaction({
        "type": "view_submission", "user": {"id": ALICE}, "view": {"type": "modal", "callback_id": "declare_incident",
                                                                  "state": {"values": {
                                                                      "title": {"title": {"value": "x"}},
                                                                      "summary": {"summary": {}},
                                                                      "severity": {"severity": {"selected_option": {
                                                                          "value": "abc"}}}}}}})),
    ("update form without metadata", FORM, interaction({
        "type": "view_submission", "user": {"id": ALICE}, "view": {"type": "modal", "callback_id": "post_update"}})),
    ("update button without value", FORM, interaction({
        "type": "block_actions", "user": {"id": ALICE}, "trigger_id": "1.2.3",
        "actions": [{"action_id": "open_update_form", "type": "button"}]})),
    ("body not UTF-8", FORM, b"text=\xff\xfe"),
]


@pytest.fixture
def room_message(slack, standin, war_room) -> str:
    """A person's message in the war room, to pin or not."""
    return slack.post_message(CAROL, war_room, "Trace 7f3a: the bot cites a refund policy we don't have")


def settle(standin) -> None:
    """Events are acked before they are handled: let the handling finish."""
    standin.wait_until_quiet(quiet_for=0.15)


def deliver_malformed(slack, standin, database, watch, war_room, room_message, content_type, body,
                      signed: bool = True) -> None:
    if isinstance(body, str):
        body = body.replace(ROOM, war_room).replace(MESSAGE_TS, room_message).encode()
    before = table_counts(database)
    headers = signed_headers(body, content_type, secret=SIGNING_SECRET if signed else "not the secret")
    if not content_type:
        del headers["Content-Type"]
    response = post(slack, body, headers)
    if signed:  # an unsigned one is refused before anything runs
        settle(standin)
    assert response.status_code < 500, f"HTTP {response.status_code}: {response.text[:300]!r}"
    assert signed or response.status_code == 401, f"unsigned, yet HTTP {response.status_code}"
    assert table_counts(database) == before, "written"
    watch.assert_no_traceback()


def test_malformed_deliveries_get_no_5xx_no_traceback_and_write_nothing(
        slack, standin, database, war_room, room_message, watch):
    # One test for every case (a clean workspace per case costs more than the cases); each is checked
    # on its own and every failing one is named.
    failures = []
    for name, content_type, body in MALFORMED:
        for signed in (True, False):
            try:
                deliver_malformed(slack, standin, database, watch, war_room, room_message, content_type, body, signed)
            except AssertionError as failure:
                failures.append(f"{name} ({'signed' if signed else 'unsigned'}): {str(failure)[:1500]}")
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("timestamp", ["abc", "", "1.5", "1e9", "-1", "+1", "0x1", "\u00b2", "\u00b9\u00b2\u00b3"])
def test_a_timestamp_that_is_not_a_number_is_refused(slack, standin, database, watch, timestamp):
    body = command_body(standin, "declare sev1 Bad timestamp")
    before = table_counts(database)
    assert_refused_unauthenticated(post(slack, body, signed_headers(body, timestamp=timestamp)), database, before,
                                   watch)


# Bolt's parse_body read any form body containing "payload" as an interactivity payload: the
# command parsed as {} and was answered 404, until bot/server.py parsed such bodies itself.
def test_a_command_mentioning_payload_is_not_dropped(slack, standin, database, war_room):
    result = slack.command(ALICE, war_room, "note The payload of the webhook was empty")
    assert result.status == 200, result.body
    assert database.scalar("SELECT count(*) FROM timeline_entry WHERE kind = 'note'") == 1


JSON_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                        st.text(max_size=20))
JSON_VALUE = st.recursive(JSON_SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.one_of(st.sampled_from(["channel", "user", "id", "ts", "type", "team", "enterprise"]), st.text(max_size=8)),
    inner, max_size=3), max_leaves=6)


@E2E
@given(data=st.data())
def test_reaction_events_of_any_shape_write_nothing_but_a_real_pin(slack, standin, database, war_room, room_message,
                                                                    watch, data):
    def optional(**fields):
        return st.fixed_dictionaries({}, optional=fields)

    item = data.draw(st.one_of(JSON_VALUE, optional(
        type=st.one_of(st.just("message"), JSON_VALUE),
        channel=st.one_of(st.sampled_from([war_room, GENERAL, "C0NOPE", ""]), JSON_VALUE),
        ts=st.one_of(st.sampled_from([room_message, "1700000000.000100", "nan", "1e99", ""]), JSON_VALUE))),
        label="item")
    event = data.draw(optional(
        type=st.one_of(st.sampled_from(["reaction_added", "reaction_removed"]), st.text(max_size=20)),
        user=st.one_of(st.sampled_from([BOB, ALICE, ""]), JSON_VALUE),
        reaction=st.one_of(st.sampled_from(["pushpin", "eyes"]), JSON_VALUE),
        item=st.just(item), item_user=JSON_VALUE, event_ts=JSON_VALUE), label="event")
    pinned_before = database.scalar("SELECT count(*) FROM timeline_entry WHERE kind = 'pinned'")
    before = table_counts(database)
    body = json.dumps(event_envelope(event))
    response = post(slack, body, signed_headers(body, JSON))
    assert response.status_code < 500, response.text[:300]
    settle(standin)
    a_real_pin = (event.get("type") == "reaction_added" and event.get("reaction") == "pushpin"
                  and isinstance(event.get("user"), str) and event["user"] and isinstance(item, dict)
                  and item.get("type") == "message" and item.get("channel") == war_room
                  and item.get("ts") == room_message)
    if a_real_pin and not pinned_before:  # the one thing such an event may write: the pin, once
        eventually(lambda: database.scalar("SELECT count(*) FROM timeline_entry WHERE kind = 'pinned'") == 1)
        assert table_counts(database) == {**before, "timeline_entry": before["timeline_entry"] + 1,
                                          "processed_event": before["processed_event"] + 1}
    else:
        assert table_counts(database) == before
    watch.assert_no_traceback()
