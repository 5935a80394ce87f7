"""`/incident help`: every subcommand and how to type it."""

from __future__ import annotations

from slack_bolt import App

from bot.render import render
from commands.parsing import USAGE, parse_no_arguments
from commands.router import Reply, Router, SlashRequest


def register(router: Router, app: App) -> None:
    def help_(request: SlashRequest) -> Reply:
        parse_no_arguments("help", request.args)
        return Reply(text=render("help.slack.j2", usage=USAGE))

    router.add("help", help_)
