"""The minimum evidence and containment: `/incident evidence` and `/incident contain`."""

from __future__ import annotations

from slack_bolt import App
from slack_sdk import WebClient

from bot import evidence, incidents
from bot.evidence import EvidenceChange
from bot.render import render
from bot.runtime import Runtime
from commands.parsing import ContainVerifyRequest, parse_contain, parse_evidence
from commands.router import Reply, Router, SlashRequest
from commands.war_room import entry_metadata, owed_room_work, post


def register(router: Router, app: App) -> None:
    runtime = router.runtime

    def evidence_command(request: SlashRequest) -> Reply:
        wanted = parse_evidence(request.args, runtime.playbook.evidence.items)
        with runtime.transaction() as session:
            if wanted is None:
                incident = incidents.incident_in_channel(session, request.channel_id)
                lines = evidence.checklist(session, incident.id, runtime.playbook)
                return Reply(text=render("evidence_checklist.slack.j2", incident=incident, lines=lines))
            change = evidence.record_evidence(session, request.channel_id, wanted.item, wanted.value,
                                              request.user_id, runtime.playbook)
        return _tell_the_room(runtime, request, change, "evidence_recorded.slack.j2", "The evidence is recorded, but")

    def contain(request: SlashRequest) -> Reply:
        wanted = parse_contain(request.args)
        with runtime.transaction() as session:
            if wanted is None:
                incident = incidents.incident_in_channel(session, request.channel_id)
                listed = evidence.containment_actions(session, incident.id)
                return Reply(text=render("containment_list.slack.j2", incident=incident, actions=listed))
            if isinstance(wanted, ContainVerifyRequest):
                change = evidence.verify_containment(session, request.channel_id, wanted.number, wanted.evidence,
                                                     request.user_id)
            else:
                change = evidence.record_containment(session, request.channel_id, wanted.text, wanted.reversible,
                                                     wanted.success_signal, request.user_id)
        return _tell_the_room(runtime, request, change, "containment.slack.j2",
                              "The containment action is recorded, but")

    router.add("evidence", evidence_command)
    router.add("contain", contain)


def _tell_the_room(runtime: Runtime, request: SlashRequest, change: EvidenceChange, template: str,
                   failure: str) -> Reply:
    """Post what was recorded in the room, tagged with its entry: owed like a note (bot.after_ack)."""
    def tell(client: WebClient) -> None:
        post(client, request.channel_id, render(template, change=change), metadata=entry_metadata(change.entry.id))

    return Reply(then=lambda client: owed_room_work(runtime, change.entry, lambda: tell(client)),
                 then_failure=failure)
