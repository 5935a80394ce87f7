"""Slack-facing handlers: one module per subcommand family, wired by `register`."""

from __future__ import annotations

from slack_bolt import App

from bot.runtime import Runtime
from commands import declare, help, log, pins, roles, state, updates
from commands.router import Router

FAMILIES = (declare, roles, log, state, updates, help, pins)


def register(app: App, runtime: Runtime) -> Router:
    """Attach every listener to the Bolt app; returns the /incident router (tests read its table)."""
    router = Router(runtime)
    for family in FAMILIES:
        family.register(router, app)
    router.register(app)
    return router
