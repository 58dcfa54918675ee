"""Two small adaptations of hypercorn 0.17/0.18 the simulator depends on.

1. Connection identity. ASGI gives a request no handle on its TCP connection, and the client
   address can repeat over a long run. Each connection gets its own ASGI ``state`` dict holding
   a unique id, so the stats can tell "9 streams on one connection" from "9 connections".
2. Aborting an HTTP/2 stream. When an ASGI app returns without finishing its response body,
   hypercorn closes an HTTP/1.1 connection (the client sees the missing terminating chunk) but
   merely forgets an HTTP/2 stream, leaving the client waiting forever. Here the stream is
   reset with INTERNAL_ERROR, after the data already sent has been flushed, which is what a
   real upstream's proxy does when its backend dies mid-response.

3. Flow control that pushes back on the app. With a stream's send window at zero, hypercorn
   still takes a zero-byte slice of the stream's buffer, which wakes the app's blocked
   ``send`` every time: a client that stops reading then makes the simulator buffer the whole
   response in memory instead of pausing the generator. Here nothing is taken while the window
   is closed, so the app waits, as a real upstream does.

All are installed by :func:`install` into hypercorn's module namespace; the simulator runs in
its own process, so nothing else is affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import h2.errors
import h2.exceptions
import hypercorn.asyncio.tcp_server
import hypercorn.protocol
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.events import StreamClosed
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.typing import ConnectionState

from .completions import CONNECTION_ID_KEY

__all__ = ["ConnectionTaggingWrapper", "ResettingH2Protocol", "install"]

_FLUSH_TIMEOUT_S = 1.0
_connection_ids = itertools.count(1)


class ResettingH2Protocol(H2Protocol):
    """HTTP/2 protocol that resets a stream whose app ended before finishing the body."""

    async def stream_send(self, event: Any) -> None:
        if isinstance(event, StreamClosed):
            buffer = self.stream_buffers.get(event.stream_id)
            if buffer is not None and not buffer._complete:
                await self._reset_stream(event.stream_id, buffer)
        await super().stream_send(event)

    async def _send_data(self, stream_id: int) -> None:
        buffer = self.stream_buffers.get(stream_id)
        window_closed = False
        with contextlib.suppress(h2.exceptions.ProtocolError, KeyError):
            window_closed = self.connection.local_flow_control_window(stream_id) <= 0
        if buffer is not None and buffer.buffer and window_closed:
            self.priority.block(stream_id)  # unblocked by the client's next WINDOW_UPDATE
            return
        await super()._send_data(stream_id)

    async def _reset_stream(self, stream_id: int, buffer: Any) -> None:
        # Let the chunks the app already sent reach the client, as a dying backend's would.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(buffer.drain(), _FLUSH_TIMEOUT_S)
        with contextlib.suppress(h2.exceptions.ProtocolError, KeyError):
            self.connection.reset_stream(stream_id, error_code=h2.errors.ErrorCodes.INTERNAL_ERROR)
        await buffer.close()
        self.stream_buffers.pop(stream_id, None)
        with contextlib.suppress(Exception):
            self.priority.remove_stream(stream_id)
        await self._flush()


class ConnectionTaggingWrapper(ProtocolWrapper):
    """Gives each TCP connection its own ASGI ``state`` with a unique connection id."""

    def __init__(
        self,
        app: Any,
        config: Any,
        context: Any,
        task_group: Any,
        state: Any,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        tagged = ConnectionState({**state, CONNECTION_ID_KEY: next(_connection_ids)})
        super().__init__(app, config, context, task_group, tagged, *args, **kwargs)


def install() -> None:
    """Make hypercorn use these adaptations (idempotent)."""
    hypercorn.protocol.H2Protocol = ResettingH2Protocol  # type: ignore[misc]
    hypercorn.asyncio.tcp_server.ProtocolWrapper = ConnectionTaggingWrapper  # type: ignore[misc]
