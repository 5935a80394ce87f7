"""What every claimed reminder carries, whatever it reminds people of (see bot.reminders)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class ClaimedReminder(BaseModel):
    """A reminder this process holds the lease on: enough to deliver it once and record that."""

    reminder_id: int
    kind: str
    due_at: datetime
    attempts: int  # above 1, an earlier attempt may have posted before its process died
    late: bool
    incident_id: int
    reference: str
    dedupe_key: str  # sent as message metadata, so a retry can find an earlier post

    def settle(self, session) -> None:
        """Anything besides the ledger row to write once this reminder is delivered or given up."""
        return None
