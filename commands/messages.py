"""Block Kit for the bot's messages, built with slack_sdk's models (which know Slack's limits)."""

from __future__ import annotations

from slack_sdk.models.blocks import DividerBlock

from bot import slack_io
from bot.incidents import IncidentView
from bot.reminders import DeliveryFailed
from bot.render import render, render_parts


SECTION_MAX_CHARS = 3000  # Slack's limit for a section's text


def section_blocks(parts: list[str]) -> list[dict]:
    """Each part as mrkdwn sections. Plain dicts: slack_sdk's block models validate every field on
    every post, a measurable share of a command's CPU (benchmarks/ack_latency.py), and
    `fit_sections` already keeps each within Slack's limit."""
    return [{"type": "section", "text": {"type": "mrkdwn", "text": piece}}
            for part in parts for piece in fit_sections(part)]


def fit_sections(text: str, limit: int = SECTION_MAX_CHARS) -> list[str]:
    """`text` in pieces of at most `limit` characters, one section each.

    Each field a person types fits a section, but a message can carry two (an action and its
    verification, a containment action and its signal): slack_sdk refused the whole message after
    the ack, and no one was told. Cut at a line break, else a space, never inside a `<…>` mention or
    link or an `&amp;` entity.
    """
    pieces = []
    while len(text) > limit:
        cut = max(text.rfind("\n", 0, limit + 1), 0) or max(text.rfind(" ", 0, limit + 1), 0) or limit
        opened = text.rfind("<", 0, cut)
        if opened > text.rfind(">", 0, cut):
            cut = opened or cut
        entity = text.rfind("&", 0, cut)
        if entity > text.rfind(";", 0, cut) and cut - entity < len("&amp;"):
            cut = entity or cut
        if text[:cut].strip():
            pieces.append(text[:cut])
        text = text[cut:].lstrip()
    return pieces + [text] if text.strip() or not pieces else pieces


def card_blocks(incident: IncidentView) -> list[dict]:
    header, *rest = section_blocks(render_parts("incident_card.slack.j2", incident=incident))
    return [header, DividerBlock().to_dict(), *rest]


def card_fallback_text(incident: IncidentView) -> str:
    """Notification and screen-reader text for the card."""
    return render("topic.slack.j2", incident=incident)


# Slack's answers that mean a room can no longer be posted to: retrying a reminder cannot help.
ROOM_GONE_ERRORS = {"channel_not_found", "is_archived", "not_in_channel", "invalid_auth", "account_inactive"}


def reminder_delivery(template: str, event_type: str, *, to=lambda due: due.channel_id,
                      permanent_errors: set[str] = ROOM_GONE_ERRORS):
    """The ticker's delivery step for one kind of reminder: `template` rendered with the claimed
    reminder, posted once to `to(due)` (its war room unless said otherwise)."""

    def for_client(client):
        def deliver(due) -> str:
            return post_reminder(client, to(due), render(template, due=due), event_type=event_type, due=due,
                                 permanent_errors=permanent_errors)
        return deliver

    return for_client


def post_reminder(client, channel: str, text: str, *, event_type: str, due, permanent_errors: set[str]) -> str:
    """Post a ticker reminder once (see slack_io.post_once); Slack's refusal becomes DeliveryFailed,
    permanent when retrying cannot help."""
    try:
        return slack_io.post_once(client, channel, text=text, blocks=section_blocks([text]), event_type=event_type,
                                  key=due.dedupe_key, since=due.due_at, maybe_posted=due.attempts > 1)
    except slack_io.SlackCallFailed as exc:
        raise DeliveryFailed(str(exc), permanent=exc.error in permanent_errors) from exc
