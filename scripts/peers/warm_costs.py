"""The per-chunk work of a paced stream measured warm: in a tight loop, one thread, no socket.

At a model's pace each read brings one or two chunks to a thread that slept meanwhile, so the
CPU it spends per chunk (``measure_wakeups.py``) includes running that code cold. The same work
in a loop shows how much of it is the work itself:

* ``h2``: the client side of ``h2`` taking one DATA frame per ``receive_data`` and handing the
  window back, as the floor and the engine's reader both do (``h2``'s public API only);
* ``floor``: what the floor adds per chunk — SSE line split, ``json.loads``, the chunk's frame
  built with the engine's ``encode_event``;
* ``engine reader side``: what the engine's reader adds per chunk after ``h2`` — the stream's
  hand-off to its section's sink, the SSE parse into a chunk event, the post into the run's
  channel — and the consumer taking the chunks out, in a batch of eight. This drives the
  engine's own ``Http2Stream`` and its fast-path sink (``worker._SectionSink``) directly, the
  only way to run that code without a connection; a script may use our own internals, never a
  library's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings

__all__ = ["warm_costs"]


def _sse_events(count: int = 1000) -> list[bytes]:
    """The content chunks the paced upstream sends, in the simulator's wire format."""
    from backend_ai.simulator import wire
    from backend_ai.simulator.text import completion_tokens

    encoder = wire.ChunkEncoder(
        completion_id="chatcmpl-warm", created=1_700_000_000, model="sim-model", include_usage=True
    )
    return [encoder.content(token) for token in completion_tokens(1000, count)]


def _best_us(run: Callable[[int], None], n: int, rounds: int = 5) -> float:
    """Fastest of ``rounds`` timings of ``run(n)``, in CPU µs per iteration (warm-up first)."""
    run(max(1, n // 4))
    best = float("inf")
    for _ in range(rounds):
        t0 = time.thread_time()
        run(n)
        best = min(best, (time.thread_time() - t0) * 1e6 / n)
    return round(best, 2)


def _h2_frames(streams: int, count: int) -> tuple[h2.connection.H2Connection, list[bytes]]:
    """A client connection with ``streams`` open responses, and ``count`` encoded DATA frames
    for them from a server connection, round-robin."""
    client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    server = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding=None)
    )
    client.initiate_connection()
    server.initiate_connection()
    client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
    client.increment_flow_control_window(2**31 - 1 - 65535)
    for _ in range(2):
        server.receive_data(client.data_to_send())
        client.receive_data(server.data_to_send())
    ids = []
    for _ in range(streams):
        stream_id = client.get_next_available_stream_id()
        client.send_headers(
            stream_id,
            [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"x"), (b":path", b"/")],
            end_stream=True,
        )
        server.receive_data(client.data_to_send())
        server.send_headers(stream_id, [(b":status", b"200")])
        ids.append(stream_id)
    client.receive_data(server.data_to_send())
    events = _sse_events()
    frames = []
    for i in range(count):
        server.send_data(ids[i % streams], events[i % len(events)])
        frames.append(server.data_to_send())
    return client, frames


def _h2_cost(n: int) -> float:
    # A frame taken again is new data on its open stream, and the window is handed back each
    # time, so a few thousand frames serve any number of iterations.
    client, frames = _h2_frames(30, 3000)
    position = 0

    def run(count: int) -> None:
        nonlocal position
        receive, acknowledge = client.receive_data, client.acknowledge_received_data
        for _ in range(count):
            for event in receive(frames[position % len(frames)]):
                if isinstance(event, h2.events.DataReceived):
                    acknowledge(event.flow_controlled_length, event.stream_id)
            position += 1
        client.data_to_send()

    return _best_us(run, n)


def _floor_cost(n: int) -> float:
    from backend_ai.streaming.events import ContentChunk
    from backend_ai.streaming.sse import encode_event

    events = _sse_events()

    def run(count: int) -> None:
        pending = b""
        loads = json.loads
        for i in range(count):
            *lines, pending = (pending + events[i % 1000]).split(b"\n")
            for line in lines:
                if not line.startswith(b"data: ") or line == b"data: [DONE]":
                    continue
                for choice in loads(line[6:]).get("choices") or ():
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        encode_event(ContentChunk("s", i, content))

    return _best_us(run, n)


def _engine_reader_cost(n: int) -> float:
    import httpx2

    from backend_ai.streaming.channel import RunChannel
    from backend_ai.streaming.config import RunOptions, StreamConfig
    from backend_ai.streaming.http2 import Http2Stream
    from backend_ai.streaming.parsers import ChatReader
    from backend_ai.streaming.section_state import SectionState
    from backend_ai.streaming.worker import _SectionSink

    class _Connection:
        """What a stream asks of its connection on this path: the read time, the list of
        sinks fed by the current read, and a window update (nothing to send here)."""

        last_received_at = 0.0

        def __init__(self) -> None:
            self._sinks_fed: list[Any] = []

        def _open_stream_window(self, stream_id: int, size: int) -> None:
            return None

    events = _sse_events()
    connection = _Connection()
    stream = Http2Stream(connection, 1)  # type: ignore[arg-type]
    channel = RunChannel(capacity=1_000_000, backpressure_timeout_s=5.0)
    state = SectionState(config=StreamConfig(section_name="s", prompt="p"))
    reader = ChatReader("s", 0, time.monotonic())
    sink = _SectionSink(reader, state, channel, RunOptions(), (), httpx2.Response(200))
    stream.attach_sink(sink)

    def run(count: int) -> None:
        on_data, get = stream._on_data, channel.get
        for i in range(count):
            on_data(events[i % 1000])
            fed, connection._sinks_fed = connection._sinks_fed, []
            for fed_sink in dict.fromkeys(fed):
                fed_sink.on_read_end()
            if i % 8 == 7:
                while get(0.0) is not None:
                    pass

    return _best_us(run, n)


def warm_costs(n: int = 40_000) -> dict[str, float]:
    """CPU µs per chunk of each part, warm (see the module docstring)."""
    return {
        "h2": _h2_cost(n),
        "floor": _floor_cost(n),
        "engine_reader_side": _engine_reader_cost(n),
    }
