"""Offline stand-in for Slack: the Web API (``server``) and the person's side (``simulator``).

``server`` uses the standard library only, so the bot's runtime can import it;
``simulator`` needs ``requests`` (a test dependency), so it is not imported here.
"""
