"""app.yaml (what Slack will send us) agrees with the listeners the bot registers."""

from __future__ import annotations

from pathlib import Path

import yaml

import commands
from bot.runtime import Runtime
from bot.settings import Settings

MANIFEST = yaml.safe_load((Path(__file__).resolve().parent.parent / "app.yaml").read_text())


class RecordingApp:
    """Stands in for slack_bolt.App and records what each register() asks for."""

    def __init__(self):
        self.commands, self.events, self.views, self.actions = set(), set(), set(), set()

    def _recorder(self, kind):
        def listen(name, *args, **kwargs):
            getattr(self, kind).add(name)
            return lambda function: function
        return listen

    def __getattr__(self, name):
        kinds = {"command": "commands", "event": "events", "view": "views", "action": "actions"}
        if name in kinds:
            return self._recorder(kinds[name])
        raise AttributeError(f"register() used App.{name}; teach this test about it")


def registered() -> RecordingApp:
    app = RecordingApp()
    commands.register(app, Runtime.from_settings(Settings(database_url="sqlite://")))
    return app


def test_slash_commands_match():
    app = registered()
    declared = {c["command"] for c in MANIFEST["features"]["slash_commands"]}
    assert declared == app.commands == {"/incident"}
    for command in MANIFEST["features"]["slash_commands"]:
        assert command["should_escape"] is True  # mentions must arrive as user ids


def test_event_subscriptions_match():
    app = registered()
    assert set(MANIFEST["settings"]["event_subscriptions"]["bot_events"]) == app.events


def test_interactivity_is_on_exactly_when_views_or_actions_are_handled():
    app = registered()
    assert MANIFEST["settings"]["interactivity"]["is_enabled"] is bool(app.views | app.actions)


def test_every_request_url_is_the_one_events_path():
    urls = [c["url"] for c in MANIFEST["features"]["slash_commands"]]
    urls += [MANIFEST["settings"]["event_subscriptions"]["request_url"],
             MANIFEST["settings"]["interactivity"]["request_url"]]
    assert {url.split("://", 1)[1].split("/", 1)[1] for url in urls} == {"slack/events"}


def test_scopes_cover_the_events():
    scopes = set(MANIFEST["oauth_config"]["scopes"]["bot"])
    assert "commands" in scopes
    needs = {"reaction_added": "reactions:read"}
    for event in MANIFEST["settings"]["event_subscriptions"]["bot_events"]:
        assert needs[event] in scopes
