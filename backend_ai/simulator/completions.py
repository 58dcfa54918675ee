"""One chat completion, from the request's arrival to its end or its injected failure.

Timing runs on an absolute schedule measured from the request's arrival (first content token at
``ttft``, each next one ``itl`` later), so the total duration does not drift with the cost of
each send. The response races a watcher for ``http.disconnect``: a client that goes away is
noticed at once, even while the simulator sleeps through a stall.

A response ends in one of four outcomes recorded in the stats: ``completed``, ``faulted`` (an
injected mid-response fault), ``disconnected`` (the client left first), ``error`` (an error
status was answered).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Coroutine, Hashable, Iterable
from typing import Any

from . import wire
from .asgi import Receive, Scope, Send, read_body, sleep_until, wait_for_disconnect
from .budget import retry_after_headers
from .profile import SimProfile
from .request import ChatRequest, RequestError, parse_chat_request
from .state import SimulatorState
from .stats import RequestRecord
from .text import completion_tokens, count_prompt_tokens

__all__ = ["CONNECTION_ID_KEY", "connection_key", "handle_chat_completion"]

logger = logging.getLogger(__name__)

CONNECTION_ID_KEY = "backend_ai.simulator.connection_id"
"""Key the server glue puts in each connection's ASGI ``state`` to tell connections apart."""

_STREAM_HEADERS = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
)


def connection_key(scope: Scope) -> Hashable:
    """Identify the TCP connection a request came on (HTTP/2 streams share one)."""
    state = scope.get("state") or {}
    key = state.get(CONNECTION_ID_KEY)
    if key is not None:
        return key
    client = scope.get("client")
    return ("client", tuple(client) if client else None)


class _Exchange:
    """Sends one response and records its status and header time."""

    def __init__(self, send: Send, record: RequestRecord) -> None:
        self._send = send
        self.record = record
        #: Sent with every answer of this exchange (the budget's ``x-ratelimit-*`` headers).
        self.common_headers: list[tuple[bytes, bytes]] = []

    def _headers(self, extra: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        return [(b"x-request-id", self.record.request_id.encode()), *self.common_headers, *extra]

    async def start(self, status: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        self.record.status = status
        self.record.t_headers = time.time()
        await self._send(
            {"type": "http.response.start", "status": status, "headers": self._headers(headers)}
        )

    async def body(self, data: bytes, *, more: bool = True) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def respond(
        self, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        await self.start(
            status,
            [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        )
        await self.body(body, more=False)

    async def error(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        await self.respond(
            status, wire.error_body(status, message, param=param, code=code), headers
        )


class _Clock:
    """Seeded jitter over an absolute schedule on the event loop's clock."""

    def __init__(self, profile: SimProfile, seed: int) -> None:
        self._jitter = profile.jitter
        self._rng = random.Random(seed ^ 0x5EED_5EED)

    def seconds(self, ms: float) -> float:
        if self._jitter:
            ms *= 1.0 + self._jitter * self._rng.uniform(-1.0, 1.0)
        return ms / 1000.0


def _fault_retry_headers(profile: SimProfile) -> list[tuple[bytes, bytes]]:
    headers = []
    if profile.retry_after is not None:
        headers.append((b"retry-after", f"{profile.retry_after:g}".encode()))
    if profile.retry_after_ms is not None:
        headers.append((b"retry-after-ms", f"{profile.retry_after_ms:g}".encode()))
    return headers


async def handle_chat_completion(
    state: SimulatorState, scope: Scope, receive: Receive, send: Send
) -> None:
    """ASGI handler for ``POST /v1/chat/completions``."""
    t0 = asyncio.get_running_loop().time()
    record = state.stats.request_started(
        connection_key=connection_key(scope),
        http_version=scope.get("http_version", "1.1"),
        record_fields={
            "request_id": "req_" + uuid.uuid4().hex,
            "method": scope["method"],
            "path": scope["path"],
        },
    )
    outcome = "error"
    try:
        outcome = await _handle(state, scope, receive, _Exchange(send, record), t0)
    finally:
        state.stats.request_finished(record, outcome)


async def _handle(
    state: SimulatorState, scope: Scope, receive: Receive, exchange: _Exchange, t0: float
) -> str:
    raw = await read_body(receive)
    if raw is None:
        return "disconnected"
    try:
        request = parse_chat_request(raw, scope, state.defaults)
    except RequestError as exc:
        await exchange.error(exc.status, exc.message, param=exc.param, code=exc.code)
        return "error"
    record = exchange.record
    record.tag = request.profile.tag
    record.model = request.model
    record.stream = request.stream

    limiter = state.limiter
    ticket = 0
    if limiter.budget.enabled:
        profile = request.profile
        expected_s = (profile.ttft_ms + profile.tokens * profile.itl_ms) / 1000.0
        # Counted as the provider counts a request on arrival: its prompt plus max_tokens.
        tokens = count_prompt_tokens(request.body.get("messages")) + (
            request.max_tokens if request.max_tokens is not None else profile.tokens
        )
        record.rate_tokens = tokens
        admission = limiter.acquire(request.api_key, expected_s, tokens)
        exchange.common_headers = admission.headers
        if not admission.admitted:
            await exchange.error(
                429,
                f"Rate limit reached (simulated): {admission.reason}. "
                f"Please try again in {admission.retry_after:.3f}s.",
                code="rate_limit_exceeded",
                headers=retry_after_headers(admission.retry_after),
            )
            return "error"
        ticket = admission.ticket
    try:
        return await _race_disconnect(receive, _respond(state, request, exchange, t0))
    finally:
        if ticket:
            limiter.release(request.api_key, ticket)


async def _race_disconnect(receive: Receive, work_coro: Coroutine[Any, Any, str]) -> str:
    """Run the response; if the client leaves first, cancel it and report ``disconnected``."""
    work = asyncio.ensure_future(work_coro)
    watcher = asyncio.ensure_future(wait_for_disconnect(receive))
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        work.cancel()
        watcher.cancel()
        raise
    if work.done():
        watcher.cancel()
        return work.result()
    work.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await work
    return "disconnected"


async def _respond(
    state: SimulatorState, request: ChatRequest, exchange: _Exchange, t0: float
) -> str:
    profile = request.profile
    if profile.fail_first:
        state.attempts[request.attempt_key] += 1
        attempt = state.attempts[request.attempt_key]
        if attempt <= profile.fail_first:
            await sleep_until(t0 + profile.header_delay_ms / 1000.0)
            await exchange.error(
                429,
                f"Rate limit reached (simulated): attempt {attempt} of the first "
                f"{profile.fail_first} is refused.",
                code="rate_limit_exceeded",
                headers=_fault_retry_headers(profile),
            )
            return "error"
    if profile.status is not None:
        await sleep_until(t0 + profile.header_delay_ms / 1000.0)
        await exchange.error(
            profile.status,
            f"Simulated error (status {profile.status}).",
            code="simulated_error",
            headers=_fault_retry_headers(profile),
        )
        return "error"

    tokens = completion_tokens(request.seed, profile.tokens)
    finish_reason = "stop"
    if request.max_tokens is not None and request.max_tokens < len(tokens):
        tokens = tokens[: request.max_tokens]
        finish_reason = "length"
    if request.stream:
        return await _stream(state, request, exchange, t0, tokens, finish_reason)
    return await _complete(request, exchange, t0, tokens, finish_reason)


async def _stream(
    state: SimulatorState,
    request: ChatRequest,
    exchange: _Exchange,
    t0: float,
    tokens: list[str],
    finish_reason: str,
) -> str:
    profile = request.profile
    record = exchange.record
    clock = _Clock(profile, request.seed)
    loop = asyncio.get_running_loop()
    encoder = wire.ChunkEncoder(
        completion_id="chatcmpl-" + record.request_id[4:28],
        created=int(time.time()),
        model=request.model,
        include_usage=request.include_usage,
    )
    count = len(tokens)

    def due(after: int | None, sent: int) -> bool:
        # A fault "after n chunks" with n beyond the text happens after the last chunk.
        return after is not None and min(after, count) == sent

    await sleep_until(t0 + profile.header_delay_ms / 1000.0)
    await exchange.start(200, _STREAM_HEADERS)
    state.stats.stream_started(record)
    await exchange.body(encoder.role())
    deadline = t0
    for sent in range(count + 1):
        stall = (profile.stall_s or 0.0) if due(profile.stall_after, sent) else 0.0
        if due(profile.malformed_after, sent):
            await exchange.body(wire.MALFORMED_LINE)
        if due(profile.error_after, sent):
            await exchange.body(wire.error_event("Simulated error in the middle of the stream."))
            await exchange.body(b"", more=False)
            return "faulted"
        if due(profile.truncate_after, sent):
            await exchange.body(b"", more=False)
            return "faulted"
        if due(profile.drop_after, sent):
            # Returning without ending the body: the server glue resets the HTTP/2 stream or
            # closes the HTTP/1.1 connection without the terminating chunk.
            return "faulted"
        if sent == count:
            if stall:
                await asyncio.sleep(stall)
            break
        if sent == 0:
            deadline = max(t0 + clock.seconds(profile.ttft_ms), loop.time())
        else:
            deadline += clock.seconds(profile.itl_ms)
        deadline += stall
        await sleep_until(deadline)
        late = loop.time() - deadline
        await exchange.body(encoder.content(tokens[sent]))
        state.stats.chunk_sent(record, late)

    tail = encoder.finish(finish_reason)
    if request.include_usage:
        tail += encoder.usage(count_prompt_tokens(request.body.get("messages")), count)
    await exchange.body(tail + wire.DONE, more=False)
    return "completed"


async def _complete(
    request: ChatRequest,
    exchange: _Exchange,
    t0: float,
    tokens: list[str],
    finish_reason: str,
) -> str:
    profile = request.profile
    clock = _Clock(profile, request.seed)
    duration = clock.seconds(profile.ttft_ms) if tokens else 0.0
    duration += sum(clock.seconds(profile.itl_ms) for _ in range(len(tokens) - 1))
    if profile.stall_after is not None:
        duration += profile.stall_s or 0.0
    await sleep_until(t0 + max(duration, profile.header_delay_ms / 1000.0))

    body = wire.completion_body(
        completion_id="chatcmpl-" + exchange.record.request_id[4:28],
        created=int(time.time()),
        model=request.model,
        content="".join(tokens),
        finish_reason=finish_reason,
        prompt_tokens=count_prompt_tokens(request.body.get("messages")),
        completion_tokens=len(tokens),
    )
    if profile.drop_after is not None:
        # Promise the whole body, send half of it, then abort.
        await exchange.start(
            200,
            [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
        )
        await exchange.body(body[: len(body) // 2])
        return "faulted"
    if profile.error_after is not None:
        await exchange.error(500, "Simulated error while generating the completion.")
        return "faulted"
    if profile.malformed_after is not None:
        truncated = body[: len(body) // 2]
        await exchange.respond(200, truncated)
        return "faulted"
    await exchange.respond(200, body)
    return "completed"
