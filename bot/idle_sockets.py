"""Whether the other end hung up on a kept, idle connection (to the database or to Slack)."""

from __future__ import annotations

import select


def hung_up(connection) -> bool:
    """True when an idle connection (a socket or anything with `fileno()`) has something to read.

    Nothing is due on an idle connection, so input means the server is closing it (a database
    restart's FATAL message, an HTTP server's idle timeout) or already has. Looking costs no round
    trip. poll, not select: a busy process may hold descriptors past select's FD_SETSIZE.
    """
    poller = select.poll()
    poller.register(connection, select.POLLIN)
    return bool(poller.poll(0))
