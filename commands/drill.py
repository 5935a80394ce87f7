"""`/incident drill list|start|next|end`: tabletop exercises in a real (clearly marked) war room."""

from __future__ import annotations

from slack_bolt import App
from slack_sdk import WebClient
from sqlalchemy import select

from bot import drills, incidents, reminders
from bot.db import utcnow
from bot.drills import InjectDue
from bot.errors import UsageError
from bot.models import Incident
from bot.render import render
from bot.runtime import Runtime
from bot.scenarios import ScenarioCatalog, default_folder, load_scenarios
from commands.messages import reminder_delivery
from commands.parsing import parse_drill
from commands.router import Reply, Router, SlashRequest
from commands.war_room import open_war_room, post, refresh_card

INJECT_EVENT = "warroom_drill_inject"


class DrillRooms:
    """Whether a channel is a drill's room, for marking every post there (see slack_io.call).

    A war room never changes between drill and real, so answers for known rooms are kept.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.known: dict[str, bool] = {}

    def __call__(self, channel_id: str) -> bool:
        if channel_id.startswith(("U", "W", "D")):  # a person or a DM: never a room, no query
            return False
        if channel_id in self.known:
            return self.known[channel_id]
        with self.runtime.sessions() as session:
            is_drill = session.scalar(select(Incident.is_drill).where(Incident.channel_id == channel_id))
        if is_drill is not None:
            self.known[channel_id] = is_drill
        return bool(is_drill)


def scenario_catalog(runtime: Runtime) -> ScenarioCatalog:
    """Read on every use, so a scenario added or fixed on disk is there without a restart."""
    return load_scenarios(runtime.settings.warroom_scenarios or default_folder(), runtime.playbook)


# The ticker's delivery step for a drill inject: posted in the drill's room, once.
deliver_inject = reminder_delivery("drill_inject.slack.j2", INJECT_EVENT)


def register(router: Router, app: App) -> None:
    runtime = router.runtime

    def drill(request: SlashRequest) -> Reply:
        wanted = parse_drill(request.args)
        if wanted.action == "list":
            return Reply(text=render("drill_list.slack.j2", catalog=scenario_catalog(runtime)))
        if wanted.action == "start":
            return start(request, wanted.scenario, wanted.speed)
        if wanted.action == "next":
            return release_next(request)
        return end(request)

    def start(request: SlashRequest, name: str, speed: float) -> Reply:
        catalog = scenario_catalog(runtime)
        scenario = catalog.scenarios.get(name)
        if scenario is None:
            reason = catalog.broken.get(f"{name}.yaml")
            raise UsageError(f"Scenario `{name}` " + (f"could not be loaded: {reason}" if reason else "does not exist."),
                             "`/incident drill list` shows the scenarios; start one with "
                             "`/incident drill start <scenario>`.")
        with runtime.transaction() as session:
            started = drills.start_drill(session, scenario, request.user_id, runtime.playbook, speed)

        def open_room(client: WebClient) -> None:
            incident = open_war_room(client, runtime, started.incident)
            post(client, incident.channel_id, render("drill_briefing.slack.j2", started=started))
            post(client, request.user_id, render("drill_answer_key.slack.j2", started=started, incident=incident),
                 step="sending you the answer key")

        channel_name = incidents.channel_name_for(started.incident.number, started.incident.title, is_drill=True)
        return Reply(text=render("drill_started.slack.j2", started=started, channel_name=channel_name), then=open_room,
                     then_failure=f"The drill {started.incident.reference} is recorded, but")

    def release_next(request: SlashRequest) -> Reply:
        owner = f"drill-next:{request.user_id}"
        with runtime.transaction() as session:
            due = drills.release_next(session, request.channel_id, owner, utcnow())

        def post_inject(client: WebClient) -> None:
            deliver_now(client, runtime, due, owner)

        return Reply(then=post_inject, then_failure="The inject is released, but")

    def end(request: SlashRequest) -> Reply:
        with runtime.transaction() as session:
            ended = drills.end_drill(session, request.channel_id, request.user_id, runtime.playbook)

        def tell(client: WebClient) -> None:
            post(client, request.channel_id, render("drill_scorecard.slack.j2", ended=ended))
            refresh_card(client, ended.incident, topic_changed=True)

        return Reply(then=tell, then_failure="The drill has ended and is scored, but")

    router.add("drill", drill)


def deliver_now(client: WebClient, runtime: Runtime, due: InjectDue, owner: str) -> None:
    """Post an inject released by hand and record it on the ledger, as the ticker would.

    Should this fail, the lease runs out and the ticker delivers the inject instead.
    """
    try:
        ts = deliver_inject(client)(due)
    except reminders.DeliveryFailed as exc:
        with runtime.transaction() as session:
            reminders.mark_failed(session, due, owner, exc, utcnow())
        raise exc.__cause__ from None  # the SlackCallFailed, which the router tells the person
    with runtime.transaction() as session:
        reminders.mark_delivered(session, due, owner, ts, utcnow())
