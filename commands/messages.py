"""Block Kit for the bot's messages, built with slack_sdk's models (which know Slack's limits)."""

from __future__ import annotations

from slack_sdk.models.blocks import DividerBlock, MarkdownTextObject, SectionBlock

from bot.incidents import IncidentView
from bot.render import render, render_parts


def section_blocks(parts: list[str]) -> list[dict]:
    return [SectionBlock(text=MarkdownTextObject(text=part)).to_dict() for part in parts]


def card_blocks(incident: IncidentView) -> list[dict]:
    header, *rest = section_blocks(render_parts("incident_card.slack.j2", incident=incident))
    return [header, DividerBlock().to_dict(), *rest]


def card_fallback_text(incident: IncidentView) -> str:
    """Notification and screen-reader text for the card."""
    return render("topic.slack.j2", incident=incident)
