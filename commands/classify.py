"""The AI incident taxonomy in the room: `/incident classify` and `/incident flag`, and the rules they fire."""

from __future__ import annotations

from slack_bolt import App
from slack_sdk import WebClient

from bot import classification
from bot.incidents import Change
from bot.render import render
from commands.messages import reminder_delivery
from commands.parsing import parse_classify, parse_flag
from commands.router import Reply, Router, SlashRequest
from commands.war_room import announce_rules, entry_metadata, owed_room_work, post, refresh_card

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

        def tell(client: WebClient) -> None:
            post(client, request.channel_id, render("classified.slack.j2", classified=classified),
                 metadata=entry_metadata(classified.change.entry.id))
            announce_rules(client, request.channel_id, classified.change.fired)
            refresh_card(client, classified.change.incident)

        return Reply(then=lambda client: owed_room_work(runtime, classified.change.entry, lambda: tell(client)),
                     then_failure="The classification is recorded, but")

    def flag(request: SlashRequest) -> Reply:
        wanted = parse_flag(request.args, playbook.flags)
        with runtime.transaction() as session:
            change = classification.set_flag(session, request.channel_id, wanted.flag, wanted.on, request.user_id,
                                             playbook)
        return Reply(then=lambda client: owed_room_work(runtime, change.entry,
                                                        lambda: _tell_flag(client, request.channel_id, change)),
                     then_failure="The flag is recorded, but")

    router.add("classify", classify)
    router.add("flag", flag)


def _tell_flag(client: WebClient, channel_id: str, change: Change) -> None:
    post(client, channel_id, render("flag_changed.slack.j2", change=change), metadata=entry_metadata(change.entry.id))
    announce_rules(client, channel_id, change.fired)
    refresh_card(client, change.incident)
