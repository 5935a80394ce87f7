"""Block Kit for the bot's messages, built with slack_sdk's models (which know Slack's limits)."""

from __future__ import annotations

from slack_sdk.models.blocks import DividerBlock, MarkdownTextObject, SectionBlock

from bot import slack_io
from bot.incidents import IncidentView
from bot.reminders import DeliveryFailed
from bot.render import render, render_parts


def section_blocks(parts: list[str]) -> list[dict]:
    return [SectionBlock(text=MarkdownTextObject(text=part)).to_dict() for part in parts]


def card_blocks(incident: IncidentView) -> list[dict]:
    header, *rest = section_blocks(render_parts("incident_card.slack.j2", incident=incident))
    return [header, DividerBlock().to_dict(), *rest]


def card_fallback_text(incident: IncidentView) -> str:
    """Notification and screen-reader text for the card."""
    return render("topic.slack.j2", incident=incident)


def post_reminder(client, channel: str, text: str, *, event_type: str, due, permanent_errors: set[str]) -> str:
    """Post a ticker reminder once (see slack_io.post_once); Slack's refusal becomes DeliveryFailed,
    permanent when retrying cannot help."""
    try:
        return slack_io.post_once(client, channel, text=text, blocks=section_blocks([text]), event_type=event_type,
                                  key=due.dedupe_key, since=due.due_at, maybe_posted=due.attempts > 1)
    except slack_io.SlackCallFailed as exc:
        raise DeliveryFailed(str(exc), permanent=exc.error in permanent_errors) from exc
