"""The few ASGI primitives the simulator needs, without a web framework in between.

A framework would add CPU per chunk and hide the one thing the simulator must control exactly:
when each byte goes out and how a response ends (cleanly, cut short, or aborted).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

__all__ = [
    "Receive",
    "Scope",
    "Send",
    "get_header",
    "read_body",
    "send_response",
    "sleep_until",
    "wait_for_disconnect",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def get_header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower-case bytes), decoded as latin-1."""
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def read_body(receive: Receive) -> bytes | None:
    """The whole request body, or ``None`` if the client went away before sending it."""
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def wait_for_disconnect(receive: Receive) -> None:
    """Return once the client has gone away (only call after the body has been read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def send_response(
    send: Send,
    status: int,
    body: bytes,
    *,
    content_type: bytes = b"application/json",
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """A complete response with a ``content-length``."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def sleep_until(deadline: float) -> None:
    """Sleep until the event loop's clock reaches ``deadline`` (absolute, so delays never drift).

    A deadline already past still yields once: a stream with ``itl_ms=0`` (or one running
    behind) must let the disconnect watcher and the other streams run between its chunks.
    """
    delay = deadline - asyncio.get_running_loop().time()
    await asyncio.sleep(delay if delay > 0 else 0)
