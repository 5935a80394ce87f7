"""Classifying an AI incident: its primary driver, its failure mode, and the flags rules depend on.

Setting a failure mode tells the room the playbook's fast containment action and diagnostic
question for it, and may fire rules (leakage needs privacy). No Slack here.
"""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy.orm import Session

from bot import incidents, rules
from bot.errors import NothingToChange, UsageError
from bot.incidents import Change, IncidentView
from bot.playbook import FailureMode, Playbook


class Classified(BaseModel):
    change: Change
    guidance: FailureMode | None  # what the playbook says to do first for this failure mode


def classify(session: Session, channel_id: str, driver: str, failure_mode: str, actor_id: str,
             playbook: Playbook) -> Classified:
    """Set the driver and failure mode (names already checked against the playbook)."""
    incident = incidents.lock_incident_in_channel(session, channel_id)
    old = f"{incident.driver}/{incident.failure_mode}" if incident.failure_mode else None
    new = f"{driver}/{failure_mode}"
    if old == new:
        raise NothingToChange(f"{incident.reference} is already classified {driver} / {failure_mode}.")
    incident.driver, incident.failure_mode = driver, failure_mode
    entry = incidents.add_entry(session, incident, "classified", actor_id, old_value=old, new_value=new,
                                text=f"driver {driver}, failure mode {failure_mode}", awaiting_room_post=True)
    # At the entry's time: the rules it fired are found by it when its message is posted late.
    fired = rules.fire_rules(session, incident, playbook, entry.occurred_at)
    change = Change(incident=IncidentView.of(incident), old_value=old, new_value=new, entry=entry, fired=fired)
    return Classified(change=change, guidance=playbook.taxonomy.failure_modes.get(failure_mode))


def set_flag(session: Session, channel_id: str, flag: str, on: bool, actor_id: str, playbook: Playbook) -> Change:
    """Turn a playbook flag (affects-people) on or off for the incident."""
    if flag not in playbook.flags:
        raise UsageError(f"`{flag}` is not a flag in the playbook.",
                         f"Flags: {', '.join(playbook.flags) or 'none are defined'}.")
    incident = incidents.lock_incident_in_channel(session, channel_id)
    flags = {name for name in incident.flags.split(",") if name}
    if (flag in flags) == on:
        raise NothingToChange(f"{flag} is already {'set' if on else 'not set'} on {incident.reference}.")
    flags = flags | {flag} if on else flags - {flag}
    incident.flags = ",".join(sorted(flags))
    entry = incidents.add_entry(session, incident, "flag", actor_id, text=playbook.flags[flag],
                                old_value=None if on else flag, new_value=flag if on else "off", source_ref=flag,
                                awaiting_room_post=True)
    fired = rules.fire_rules(session, incident, playbook, entry.occurred_at) if on else []
    return Change(incident=IncidentView.of(incident), old_value=entry.old_value, new_value=entry.new_value,
                  entry=entry, fired=fired)
