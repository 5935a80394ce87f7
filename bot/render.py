"""Jinja2 rendering of Slack messages, with everything a person typed escaped for mrkdwn.

Every `{{ value }}` in a template is escaped unless the bot built it on purpose (a `Mrkdwn`
string, e.g. a mention of a validated user id), so `<!channel>` in a title shows as text.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from functools import lru_cache

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from bot.db import REPO_ROOT
from bot.incidents import ROLES
from bot.playbook import format_duration

TEMPLATES_DIR = REPO_ROOT / "templates"
PART_SEPARATOR = re.compile(r"^---\s*$", re.MULTILINE)
USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")


class Mrkdwn(str):
    """Text the bot built itself and vouches for; it is not escaped again."""


def escape_mrkdwn(text: str) -> str:
    """Slack's three control characters, as Slack asks: & < > become entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def fit_escaped(text: str, limit: int) -> str:
    """`text` cut so that, once escaped for mrkdwn, it is at most `limit` characters."""
    if len(escape_mrkdwn(text)) <= limit:
        return text
    cut = text[:limit]
    while len(escape_mrkdwn(cut)) > limit - 1:
        cut = cut[: len(cut) * 9 // 10]
    return cut + "…"


def _finalize(value):
    if value is None:
        return ""
    if isinstance(value, Mrkdwn):
        return value
    return escape_mrkdwn(str(value))


def mention(user_id: str | None) -> Mrkdwn:
    """A mention of a user id that we validated; anything else is shown as escaped text."""
    if user_id and USER_ID.match(user_id):
        return Mrkdwn(f"<@{user_id}>")
    return Mrkdwn(escape_mrkdwn(user_id or "someone"))


def channel_link(channel_id: str | None, name: str | None = None) -> Mrkdwn:
    if channel_id and CHANNEL_ID.match(channel_id):
        return Mrkdwn(f"<#{channel_id}>")
    return Mrkdwn(escape_mrkdwn(f"#{name or 'unknown'}"))


def utc(moment: datetime | None) -> str:
    """A stored time as `2026-11-23 18:31 UTC`."""
    if moment is None:
        return "—"
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        finalize=_finalize,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        autoescape=False,  # HTML escaping is wrong for mrkdwn; _finalize escapes instead
        auto_reload=False,  # templates ship with the code: no stat of each file on every render
    )
    env.globals.update(mention=mention, channel_link=channel_link, ROLES=ROLES)
    env.filters.update(utc=utc, duration=format_duration)
    return env


def markdown_cell(value) -> str:
    """Text that stays inside one Markdown table cell and shows as typed (no HTML, no broken columns)."""
    if value is None or value == "":
        return ""
    return (str(value).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\r\n", "\n").replace("\n", "<br>"))


def utc_seconds(moment: datetime | None) -> str:
    """A stored time as `2026-11-23 18:31:05 UTC`, for records where seconds matter."""
    if moment is None:
        return "—"
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _unescaped_environment(**filters) -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES_DIR)), undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, autoescape=False, auto_reload=False)
    env.globals.update(ROLES=ROLES)
    env.filters.update(filters)
    return env


@lru_cache(maxsize=1)
def plain_environment() -> Environment:
    """For text a person will edit before it is posted (a draft in a form): nothing escaped,
    because it is escaped when it is finally posted, like anything else a person typed."""
    return _unescaped_environment(utc=utc)


@lru_cache(maxsize=1)
def markdown_environment() -> Environment:
    """For Markdown files (exports, the postmortem): values go in as typed; table cells use `| cell`."""
    return _unescaped_environment(utc=utc_seconds, cell=markdown_cell)


def render_markdown(template_name: str, **context) -> str:
    """Render a *.md.j2 template to Markdown."""
    return markdown_environment().get_template(template_name).render(**context).strip()


def render_plain(template_name: str, **context) -> str:
    """Render a *.txt.j2 template to plain text."""
    return plain_environment().get_template(template_name).render(**context).strip()


def render(template_name: str, **context) -> str:
    """Render a template to one mrkdwn string."""
    return environment().get_template(template_name).render(**context).strip()


def render_parts(template_name: str, **context) -> list[str]:
    """Render a template whose parts are separated by `---` lines (one Slack section each)."""
    text = render(template_name, **context)
    return [part.strip() for part in PART_SEPARATOR.split(text) if part.strip()]
