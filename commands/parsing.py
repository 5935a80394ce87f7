"""Turn the text after `/incident` into validated requests, or a UsageError that says how to fix it.

Slack sends slash-command text with `should_escape: true`: `&`, `<`, `>` arrive as entities and
mentions arrive as `<@U123|name>`. We keep what the person meant as plain text; rendering escapes
it again on the way out.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone

from pydantic import BaseModel

from bot import redaction
from bot.db import utcnow
from bot.errors import UsageError
from bot.export import FORMATS
from bot.incidents import MARKS, ROLES, SEVERITIES, STATUSES, TITLE_MAX_CHARS
from bot.playbook import Taxonomy, parse_duration
from bot.render import escape_mrkdwn

DEFAULT_SEVERITY = 3
# What a war-room message may carry once escaped; leaves room in Slack's 3,000-char section.
ENTRY_MAX_CHARS = 2500

USAGE = {
    "declare": "`/incident declare [sev1|sev2|sev3|sev4] <title>`, or `/incident declare` alone for a form",
    "role": "`/incident role <ic|scribe|comms|tech|legal|privacy> @person`",
    "roles": "`/incident roles`",
    "decision": "`/incident decision <what was decided, and why> [owner: @person]`",
    "note": "`/incident note <text>`",
    "sev": "`/incident sev <1-4> [reason]`, or `/incident sev` alone for what each level means",
    "status": "`/incident status <investigating|identified|contained|monitoring|resolved> [note]`; "
              "`/incident status resolved force: <why>` past the playbook's checks",
    "timeline": "`/incident timeline`",
    "update": "`/incident update [audience:] <what happened, impact, status, next steps, asks>`, or "
              "`/incident update [audience:]` alone for a drafted form",
    "cadence": "`/incident cadence <30s|15m|1h|off>`",
    "snooze": "`/incident snooze <15m>`",
    "classify": "`/incident classify <driver> <failure-mode>`, e.g. `/incident classify data leakage`",
    "flag": "`/incident flag <name> [off]`, e.g. `/incident flag affects-people`",
    "evidence": "`/incident evidence` for the checklist, or `/incident evidence <item> <value or link>`",
    "contain": "`/incident contain <action> [reversible|irreversible] [verify: <what will show it worked>]`, "
               "`/incident contain verified <n> <evidence>`, or `/incident contain` for the list",
    "impact": "`/incident impact` for the checklist, or `/incident impact <question> <answer>`",
    "notify": "`/incident notify` for the assessment, `/incident notify <question> <yes|no|unknown>`, "
              "`/incident notify decide notify <who, how>` or `/incident notify decide not <why>`",
    "mark": "`/incident mark <impact-start|detected> <UTC time, like 2026-11-23 14:05 or 14:05>`",
    "action": "`/incident action @owner YYYY-MM-DD <what> [verify: <how we will know it works>]`, "
              "`/incident action <n> verify: <how we will know it works>`, "
              "`/incident action done <n> [note]` or `/incident action verified <n> <how it was verified>`",
    "actions": "`/incident actions`",
    "export": "`/incident export [md|json|csv]` (Markdown if not given)",
    "postmortem": "`/incident postmortem` for the draft, or `/incident postmortem done [link to the final one]`",
    "drill": "`/incident drill list`, `/incident drill start <scenario> [--speed <1-600>]`, "
             "and in the drill's room `/incident drill next` or `/incident drill end`",
    "help": "`/incident help`",
}

FORCE_MARKER = re.compile(r"^force:", re.IGNORECASE)
# A user id fits the 32-character id columns (Slack's are about 11); a longer one is no mention we can store.
MENTION = re.compile(r"^<@([UW][A-Z0-9]{1,31})(?:\|[^>]*)?>$")
SEVERITY_WORD = re.compile(r"^(?:sev)?-?(\d+)$", re.IGNORECASE)
ESCAPED_LINK = re.compile(r"<([@#])([A-Z0-9]+)\|([^>]*)>|<((?:https?|mailto):[^|>]+)\|([^>]*)>")


class DeclareRequest(BaseModel):
    title: str
    severity: int
    summary: str = ""
    driver: str | None = None
    failure_mode: str | None = None


class RoleRequest(BaseModel):
    role: str
    user_id: str


class TextRequest(BaseModel):
    text: str
    owner_id: str | None = None  # a decision's owner: who carries it out


class SeverityRequest(BaseModel):
    severity: int
    reason: str = ""


class DurationRequest(BaseModel):
    duration: timedelta | None  # None: off


class MarkRequest(BaseModel):
    mark: str
    when: datetime


class ActionRequest(BaseModel):
    owner_id: str
    due_on: date
    text: str
    verification: str = ""


class ActionStateRequest(BaseModel):
    state: str  # done | verified | verification (how it will be verified, added later)
    number: int
    text: str = ""


class ClassifyRequest(BaseModel):
    driver: str
    failure_mode: str


class FlagRequest(BaseModel):
    flag: str
    on: bool


class EvidenceRequest(BaseModel):
    item: str
    value: str


class ContainRequest(BaseModel):
    text: str
    reversible: bool | None
    success_signal: str


class ContainVerifyRequest(BaseModel):
    number: int
    evidence: str


class AnswerRequest(BaseModel):
    question: str
    answer: str


class DecisionRequest(BaseModel):
    notify: bool
    reason: str


class UpdateRequest(BaseModel):
    audience: str | None  # None: stakeholders in general
    text: str | None  # None: open the drafted form


class StatusRequest(BaseModel):
    status: str
    note: str = ""
    force_reason: str | None = None


def usage_error(subcommand: str, message: str) -> UsageError:
    return UsageError(message, f"Usage: {USAGE[subcommand]}")


def split_subcommand(text: str) -> tuple[str, str]:
    """`decision Roll back v14` -> ("decision", "Roll back v14")."""
    head, _, rest = text.strip().partition(" ")
    return head.lower(), rest.strip()


def human_text(raw: str) -> str:
    """What the person typed, as text: Slack's entities undone, escaped links shown by name."""

    def readable(match: re.Match) -> str:
        if match.group(1):
            return f"{match.group(1)}{match.group(3) or match.group(2)}"
        return f"{match.group(5)} ({match.group(4)})"

    text = ESCAPED_LINK.sub(readable, raw)
    # NUL is dropped: PostgreSQL cannot store it in text (the command failed as an internal error),
    # and no one means to type it.
    text = text.replace("\x00", "")
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").strip()


# Placeholders are as long whatever the deployment's key, so any key measures the text as stored.
MEASURING_KEY = redaction.derive_key("warroom/parsing/measure")
REDACTED_NOTE = " once the secrets and personal data in it are replaced by placeholders"


def stored_length(text: str) -> int:
    """How long `text` is as stored and shown: redacted (a placeholder is longer than a short
    e-mail address) and escaped for mrkdwn."""
    return len(escape_mrkdwn(redaction.redact(text, key=MEASURING_KEY).text))


# Numbers people type end up in 32-bit INTEGER columns (PostgreSQL refused a larger one as an
# internal error; SQLite overflowed past 64 bits), and int() refuses more than 4,300 digits.
NUMBER_MAX_DIGITS = 9


def small_number(digits: str) -> int | None:
    """The number `digits` (already matched as digits) stands for, or None if it is too long to be one of ours."""
    return int(digits) if len(digits) <= NUMBER_MAX_DIGITS else None


def checked_text(subcommand: str, raw: str, what: str, *, required: bool) -> str:
    text = human_text(raw)
    if required and not text:
        raise usage_error(subcommand, f"The {what} is missing.")
    # Measured as stored (redacted) and posted (escaped): redaction can make a text that fits
    # too long for its Slack section, which then failed after the ack without telling anyone.
    measured = stored_length(text)
    if measured > ENTRY_MAX_CHARS:
        if measured > len(escape_mrkdwn(text)):
            raise usage_error(subcommand, f"The {what} is too long{REDACTED_NOTE} ({measured} characters; the limit "
                                          f"is {ENTRY_MAX_CHARS}). Shorten it, or split it into two entries.")
        raise usage_error(
            subcommand,
            f"The {what} is too long ({len(text)} characters; the limit is {ENTRY_MAX_CHARS}, "
            "and each & < > counts as several). Shorten it, or split it into two entries.",
        )
    return text


def parse_severity(subcommand: str, word: str) -> int:
    match = SEVERITY_WORD.match(word)
    severity = small_number(match.group(1)) if match else None  # int() of 4,301+ digits raised ValueError
    if severity not in SEVERITIES:
        raise usage_error(subcommand, f"`{word}` is not a severity: use 1, 2, 3 or 4 (1 is the most severe).")
    return severity


def parse_title(subcommand: str, raw: str) -> str:
    title = " ".join(checked_text(subcommand, raw, "title", required=True).split())
    if len(title) > TITLE_MAX_CHARS:
        raise usage_error(
            subcommand, f"The title is {len(title)} characters; keep it to {TITLE_MAX_CHARS} or fewer."
        )
    # The title is stored redacted, in a 200-character column: e-mail addresses in a title that fits
    # made it too long for PostgreSQL (an internal error). Measured the way it is stored.
    stored = len(redaction.redact(title, key=MEASURING_KEY).text)
    if stored > TITLE_MAX_CHARS:
        raise usage_error(
            subcommand, f"The title is {stored} characters{REDACTED_NOTE}; keep it to {TITLE_MAX_CHARS} or fewer."
        )
    return title


def parse_declare(args: str) -> DeclareRequest:
    first, _, rest = args.partition(" ")
    if SEVERITY_WORD.match(first) and first.lower().startswith("sev"):
        return DeclareRequest(severity=parse_severity("declare", first), title=parse_title("declare", rest))
    return DeclareRequest(severity=DEFAULT_SEVERITY, title=parse_title("declare", args))


def parse_role(args: str) -> RoleRequest:
    words = args.split()
    if len(words) != 2:
        raise usage_error("role", "Name one role and one person.")
    role, person = words[0].lower(), words[1]
    if role not in ROLES:
        raise usage_error("role", f"`{human_text(role)}` is not a role. Roles: {', '.join(ROLES)}.")
    match = MENTION.match(person)
    if not match:
        raise usage_error(
            "role",
            f"`{human_text(person)}` is not a mention. Type @ and pick the person from Slack's list.",
        )
    return RoleRequest(role=role, user_id=match.group(1))


# `… owner: @person` at the end of a decision names who carries it out.
DECISION_OWNER = re.compile(r"\s*\bowner:\s*(\S+)\s*$", re.IGNORECASE)


def parse_entry(subcommand: str, args: str) -> TextRequest:
    what = "decision" if subcommand == "decision" else "note"
    owner_id = None
    owner = DECISION_OWNER.search(args) if subcommand == "decision" else None
    if owner:
        mention = MENTION.match(owner.group(1))
        if not mention:
            raise usage_error("decision", f"`{human_text(owner.group(1))}` is not a mention: a decision's owner is "
                                          "a person. Type @ and pick them from Slack's list.")
        owner_id, args = mention.group(1), args[:owner.start()]
    return TextRequest(text=checked_text(subcommand, args, what, required=True), owner_id=owner_id)


def parse_sev(args: str) -> SeverityRequest:
    first, _, rest = args.partition(" ")
    if not first:
        raise usage_error("sev", "Give the new severity.")
    return SeverityRequest(
        severity=parse_severity("sev", first), reason=checked_text("sev", rest, "reason", required=False)
    )


def parse_keyword(subcommand: str, word: str, choices, *, not_a: str, missing: str) -> str:
    """One of `choices`, case-insensitively, or a UsageError listing them."""
    if word.lower() not in choices:
        shown = f"`{human_text(word)}` is not {not_a}" if word else missing
        raise usage_error(subcommand, f"{shown}: use one of {', '.join(choices)}.")
    return word.lower()


def parse_status(args: str) -> StatusRequest:
    first, _, rest = args.partition(" ")
    status = parse_keyword("status", first, STATUSES, not_a="a status", missing="Give the new status")
    forced = FORCE_MARKER.match(rest.strip())
    if forced:
        reason = checked_text("status", rest.strip()[forced.end():], "reason for forcing it", required=True)
        return StatusRequest(status=status, note="", force_reason=reason)
    return StatusRequest(status=status, note=checked_text("status", rest, "note", required=False))


class DrillRequest(BaseModel):
    action: str  # list, start, next, end
    scenario: str | None = None
    speed: float = 1.0


DRILL_ACTIONS = ("list", "start", "next", "end")
SPEED_FLAG = re.compile(r"\s*--speed[= ]\s*(\S+)\s*", re.IGNORECASE)


def parse_drill(args: str) -> DrillRequest:
    """`list` | `start <scenario> [--speed N]` | `next` | `end`."""
    action, _, rest = args.strip().partition(" ")
    action = parse_keyword("drill", action, DRILL_ACTIONS, not_a="a drill command",
                           missing="Say what to do with drills")
    rest = rest.strip()
    if action != "start":
        if rest:
            raise usage_error("drill", f"`drill {action}` takes nothing more.")
        return DrillRequest(action=action)
    speed = 1.0
    flag = SPEED_FLAG.search(rest)
    if flag:
        try:
            speed = float(flag.group(1).rstrip("x"))
        except ValueError:
            raise usage_error("drill", f"`{human_text(flag.group(1))}` is not a speed; write a number, "
                                       "like `--speed 60`.") from None
        rest = (rest[:flag.start()] + " " + rest[flag.end():]).strip()
    if not rest:
        raise usage_error("drill", "Name the scenario to start (`/incident drill list` shows them).")
    if " " in rest:
        raise usage_error("drill", f"`{human_text(rest)}` is not one scenario name: names have no spaces "
                                   "(`/incident drill list` shows them).")
    return DrillRequest(action="start", scenario=rest.lower(), speed=speed)


def parse_postmortem_done(args: str) -> str:
    """`done [link]` after `/incident postmortem`: the finished review, and where it lives."""
    word, _, link = args.strip().partition(" ")
    if word.lower() != "done":
        raise usage_error("postmortem", f"`{human_text(word)}` is not something `postmortem` does.")
    return checked_text("postmortem", link, "link", required=False)


def parse_no_arguments(subcommand: str, args: str) -> None:
    if args:
        raise usage_error(subcommand, f"`{subcommand}` takes no arguments.")


# A cadence or snooze longer than this is a typo; the clock arithmetic overflowed past year 9999.
MAX_DURATION = timedelta(days=365)


def parse_duration_argument(subcommand: str, args: str, *, allow_off: bool) -> DurationRequest:
    text = args.strip().lower()
    if allow_off and text == "off":
        return DurationRequest(duration=None)
    try:
        duration = parse_duration(text)
    except (ValueError, OverflowError):  # OverflowError: more days than a timedelta holds
        shown = f"`{human_text(args)}` is not a duration" if text else "Give a duration"
        raise usage_error(subcommand, f"{shown}: write it like 30s, 15m, 1h or 1h30m"
                          + (", or off." if allow_off else ".")) from None
    if duration > MAX_DURATION:  # the clock arithmetic overflowed past year 9999 (an unhandled error)
        raise usage_error(subcommand, f"`{human_text(args)}` is longer than a year: write it like 30s, 15m, 1h "
                                      "or 1h30m" + (", or off." if allow_off else "."))
    return DurationRequest(duration=duration)


VERIFY_MARKER = re.compile(r"\bverify:", re.IGNORECASE)
ACTION_NUMBER = re.compile(r"^[aA]?(\d+)$")


def parse_mention(subcommand: str, word: str, what: str = "person") -> str:
    match = MENTION.match(word)
    if not match:
        shown = f"`{human_text(word)}` is not a mention" if word else f"The {what} is missing"
        raise usage_error(subcommand, f"{shown}. Type @ and pick the {what} from Slack's list.")
    return match.group(1)


def parse_utc_time(subcommand: str, text: str, now: datetime | None = None) -> datetime:
    """A moment people type: `2026-11-23 14:05`, ISO 8601 with Z or an offset, or `14:05` alone
    (the latest such time, today or yesterday). Times without an offset are UTC."""
    now = now or utcnow()
    cleaned = human_text(text).strip()
    bare = re.sub(r"\s*UTC$", "", cleaned, flags=re.IGNORECASE)
    try:
        if re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", bare):
            clock = time(*(int(part) for part in bare.split(":")))
            moment = datetime.combine(now.date(), clock, tzinfo=timezone.utc)
            return moment if moment <= now else moment - timedelta(days=1)
        moment = datetime.fromisoformat(bare)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        # Inside the try: an offset at either end of the calendar (0001-01-01T00:00+01:00) has no
        # UTC time, and OverflowError escaped as an unhandled error.
        return moment.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        shown = f"`{cleaned}` is not a time" if cleaned else "The time is missing"
        raise usage_error(subcommand, f"{shown}: write it in UTC like `2026-11-23 14:05`, `14:05`, "
                                      "or with an offset like `2026-11-23T15:05+01:00`.") from None


def parse_mark(args: str) -> MarkRequest:
    first, _, rest = args.partition(" ")
    mark = parse_keyword("mark", first, tuple(MARKS), not_a="something to mark", missing="Say what to mark")
    return MarkRequest(mark=mark, when=parse_utc_time("mark", rest))


def parse_action(args: str) -> ActionRequest | ActionStateRequest:
    first, _, rest = args.partition(" ")
    if first.lower() in ("done", "verified"):
        state = first.lower()
        number_word, _, text = rest.strip().partition(" ")
        match = ACTION_NUMBER.match(number_word)
        number = small_number(match.group(1)) if match else None  # a huge one failed in the database
        if number is None:
            shown = (f"`{human_text(number_word)}` is not an action number" if number_word
                     else "Give the action's number")
            raise usage_error("action", f"{shown}: see them with `/incident actions` (A1 is 1).")
        text = checked_text("action", text, "verification evidence" if state == "verified" else "note",
                            required=state == "verified")
        return ActionStateRequest(state=state, number=number, text=text)
    number = ACTION_NUMBER.match(first)
    if number and VERIFY_MARKER.match(rest.strip()):
        if small_number(number.group(1)) is None:  # a huge one failed in the database
            raise usage_error("action", f"`{human_text(first)}` is not an action number: see them with "
                                        "`/incident actions` (A1 is 1).")
        how = checked_text("action", VERIFY_MARKER.split(rest, maxsplit=1)[1], "verification", required=True)
        return ActionStateRequest(state="verification", number=int(number.group(1)), text=how)
    owner_id = parse_mention("action", first, "owner")
    due_word, _, rest = rest.strip().partition(" ")
    try:
        due_on = date.fromisoformat(due_word)
    except ValueError:
        shown = f"`{human_text(due_word)}` is not a date" if due_word else "The due date is missing"
        raise usage_error("action", f"{shown}: write it as YYYY-MM-DD, like 2026-12-04.") from None
    what, verification, found = rest, "", VERIFY_MARKER.search(rest)
    if found:
        what, verification = rest[:found.start()], rest[found.end():]
    text = checked_text("action", what, "action", required=True)
    verification = checked_text("action", verification, "verification", required=bool(found))
    return ActionRequest(owner_id=owner_id, due_on=due_on, text=text, verification=verification)


def parse_export_format(args: str) -> str:
    fmt = args.strip().lower() or "md"
    if fmt not in FORMATS:
        raise usage_error("export", f"`{human_text(args)}` is not an export format: use md, json or csv.")
    return fmt


def parse_classify(args: str, taxonomy: Taxonomy) -> ClassifyRequest:
    words = args.split()
    modes = ", ".join(taxonomy.failure_modes)
    if len(words) != 2:
        raise usage_error("classify", f"Give a driver ({', '.join(taxonomy.drivers)}) and a failure mode ({modes}).")
    driver = parse_keyword("classify", words[0], tuple(taxonomy.drivers), not_a="a driver", missing="")
    failure_mode = taxonomy.failure_mode(words[1])
    if failure_mode is None:
        aliases = f"; also {', '.join(taxonomy.aliases)}" if taxonomy.aliases else ""
        raise usage_error("classify", f"`{human_text(words[1])}` is not a failure mode: use one of {modes}{aliases}.")
    return ClassifyRequest(driver=driver, failure_mode=failure_mode)


def parse_flag(args: str, flags: dict[str, str]) -> FlagRequest:
    words = args.split()
    if not 1 <= len(words) <= 2 or (len(words) == 2 and words[1].lower() != "off"):
        raise usage_error("flag", f"Name one flag ({', '.join(flags) or 'none are defined'}), and `off` to remove it.")
    flag = parse_keyword("flag", words[0], tuple(flags), not_a="a flag in the playbook", missing="")
    return FlagRequest(flag=flag, on=len(words) == 1)


def parse_checklist_entry(subcommand: str, args: str, keys, *, not_a: str, what: str) -> tuple[str, str] | None:
    """`<key> <text>` for a checklist (evidence, impact): the key and the text; None to show the checklist."""
    if not args.strip():
        return None
    first, _, rest = args.strip().partition(" ")
    key = parse_keyword(subcommand, first, tuple(keys), not_a=not_a, missing="")
    return key, checked_text(subcommand, rest, what, required=True)


def parse_evidence(args: str, items) -> EvidenceRequest | None:
    """None: show the checklist."""
    entry = parse_checklist_entry("evidence", args, items, not_a="an evidence item", what="value")
    return EvidenceRequest(item=entry[0], value=entry[1]) if entry else None


REVERSIBILITY = re.compile(r"\s+(reversible|irreversible)\s*$", re.IGNORECASE)
CONTAIN_NUMBER = re.compile(r"^[cC]?(\d+)$")


def parse_contain(args: str) -> ContainRequest | ContainVerifyRequest | None:
    """None: list the containment actions."""
    text = args.strip()
    if not text:
        return None
    first, _, rest = text.partition(" ")
    if first.lower() == "verified":
        number_word, _, evidence = rest.strip().partition(" ")
        match = CONTAIN_NUMBER.match(number_word)
        number = small_number(match.group(1)) if match else None  # a huge one failed in the database
        if number is None:
            shown = f"`{human_text(number_word)}` is not a containment number" if number_word else "Give its number"
            raise usage_error("contain", f"{shown}: see them with `/incident contain` (C1 is 1).")
        evidence = checked_text("contain", evidence, "evidence that it worked", required=True)
        return ContainVerifyRequest(number=number, evidence=evidence)
    action, signal, found = text, "", VERIFY_MARKER.search(text)
    if found:
        action, signal = text[:found.start()], text[found.end():]
    reversible = None
    word = REVERSIBILITY.search(" " + action)
    if word:
        reversible = word.group(1).lower() == "reversible"
        action = (" " + action)[:word.start()]
    return ContainRequest(text=checked_text("contain", action, "containment action", required=True),
                          reversible=reversible,
                          success_signal=checked_text("contain", signal, "signal that it worked", required=bool(found)))


def parse_impact(args: str, questions) -> AnswerRequest | None:
    """None: show the checklist."""
    entry = parse_checklist_entry("impact", args, questions, not_a="an impact question", what="answer")
    return AnswerRequest(question=entry[0], answer=entry[1]) if entry else None


def parse_notify(args: str, questions) -> AnswerRequest | DecisionRequest | None:
    """None: show the assessment."""
    words = args.strip().split(maxsplit=2)
    if not words:
        return None
    if words[0].lower() == "decide":
        choice = words[1].lower() if len(words) > 1 else ""
        if choice not in ("notify", "not"):
            raise usage_error("notify", "Say `decide notify <who, how>` or `decide not <why>`.")
        what = "who is notified, and how" if choice == "notify" else "reason not to notify"
        return DecisionRequest(notify=choice == "notify",
                               reason=checked_text("notify", words[2] if len(words) > 2 else "", what, required=True))
    question = parse_keyword("notify", words[0], tuple(questions), not_a="a notification question", missing="")
    answer = parse_keyword("notify", " ".join(words[1:]), ("yes", "no", "unknown"), not_a="an answer",
                           missing="Give the answer")
    return AnswerRequest(question=question, answer=answer)


AUDIENCE_PREFIX = re.compile(r"^([A-Za-z][\w-]*):(.*)$", re.DOTALL)


def parse_update(args: str, audiences) -> UpdateRequest:
    """`customers: <text>` is an update for that audience; a prefix that names no audience
    (`Status: …`) is part of an ordinary update."""
    match = AUDIENCE_PREFIX.match(args.strip())
    audience, rest = None, args
    if match and match.group(1).lower() in audiences:
        audience, rest = match.group(1).lower(), match.group(2)
    if not human_text(rest):
        return UpdateRequest(audience=audience, text=None)
    return UpdateRequest(audience=audience, text=checked_text("update", rest, "update", required=True))
