"""A small send buffer on every socket a process accepts, for a test server only.

``test_client_faults`` puts this directory on the ``PYTHONPATH`` of one gunicorn child. On
loopback Linux grows a socket's send buffer to megabytes, more than a whole response of the
service (at most 9 sections x 500 tokens, about 300 KB), so a client that stops reading never
makes the server wait. A fixed ``SO_SNDBUF`` (``BACKEND_AI_TEST_SO_SNDBUF`` bytes) models what
a real slow client behind a real network does: the server's writes block once a few kilobytes
are in flight. Nothing else in the process changes.
"""

from __future__ import annotations

import os
import socket

_SIZE = int(os.environ.get("BACKEND_AI_TEST_SO_SNDBUF", "0") or 0)

if _SIZE > 0:
    _accept = socket.socket.accept

    def _accept_with_small_buffer(self: socket.socket) -> tuple[socket.socket, object]:
        conn, address = _accept(self)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SIZE)
        return conn, address

    socket.socket.accept = _accept_with_small_buffer  # type: ignore[method-assign]
