"""The AI incident taxonomy in the room: `/incident classify` and `/incident flag`, and the rules they fire."""

from __future__ import annotations

from slack_bolt import App
from slack_sdk import WebClient

from bot import classification
from bot.incidents import Change
from commands.messages import reminder_delivery
from commands.parsing import parse_classify, parse_flag
from commands.router import Reply, Router, SlashRequest
from commands.war_room import announce_rules, owed_room_post, refresh_card

RULE_EVENT = "warroom_rule_missed"


# The ticker's delivery step for a rule requirement past its deadline: a call-out in the room.
deliver_rule_missed = reminder_delivery("rule_missed.slack.j2", RULE_EVENT)


def register(router: Router, app: App) -> None:
    runtime = router.runtime
    playbook = runtime.playbook

    def classify(request: SlashRequest) -> Reply:
        wanted = parse_classify(request.args, playbook.taxonomy)
        with runtime.transaction() as session:
            classified = classification.classify(session, request.channel_id, wanted.driver, wanted.failure_mode,
                                                 request.user_id, playbook)

        return owed_room_post(runtime, request.channel_id, classified.change.entry,
                              "The classification is recorded, but", "classified.slack.j2",
                              and_then=_rules_and_card(request.channel_id, classified.change), classified=classified)

    def flag(request: SlashRequest) -> Reply:
        wanted = parse_flag(request.args, playbook.flags)
        with runtime.transaction() as session:
            change = classification.set_flag(session, request.channel_id, wanted.flag, wanted.on, request.user_id,
                                             playbook)
        return owed_room_post(runtime, request.channel_id, change.entry, "The flag is recorded, but",
                              "flag_changed.slack.j2", and_then=_rules_and_card(request.channel_id, change),
                              change=change)

    router.add("classify", classify)
    router.add("flag", flag)


def _rules_and_card(channel_id: str, change: Change):
    """What follows a classification's or a flag's message: the rules it fired, the card brought up to date."""
    def follow(client: WebClient) -> None:
        announce_rules(client, channel_id, change.fired)
        refresh_card(client, change.incident)
    return follow
