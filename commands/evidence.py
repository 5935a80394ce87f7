"""The minimum evidence and containment: `/incident evidence` and `/incident contain`."""

from __future__ import annotations

from slack_bolt import App

from bot import evidence, incidents
from bot.render import render
from commands.parsing import ContainVerifyRequest, parse_contain, parse_evidence
from commands.router import Reply, Router, SlashRequest
from commands.war_room import owed_room_post


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
        return owed_room_post(runtime, request.channel_id, change.entry, "The evidence is recorded, but",
                              "evidence_recorded.slack.j2", change=change)

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
        return owed_room_post(runtime, request.channel_id, change.entry, "The containment action is recorded, but",
                              "containment.slack.j2", change=change)

    router.add("evidence", evidence_command)
    router.add("contain", contain)

