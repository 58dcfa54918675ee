"""A hand-written HTTP/2 upstream that misbehaves on cue, for the transport's scenario tests.

Real servers (hypercorn, the simulator) are built to behave; they cannot lower
``SETTINGS_MAX_CONCURRENT_STREAMS`` under open streams, send a ``WINDOW_UPDATE`` that overflows
the peer's window, keep streaming after a GOAWAY or drop the TCP connection between two DATA
frames. This server speaks h2c (prior knowledge) on a real loopback socket with the ``h2``
library's public API, one thread per accepted connection, and lets each test *script* what a
connection does, frame by frame. Frames ``h2`` refuses to produce (a connection error on
purpose, DATA after GOAWAY or on a closed stream) are built with ``hyperframe``, the framing
layer ``h2`` itself uses, and written next to ``h2``'s own output — in the same ``sendall``
when a scenario needs them to arrive in one read.

A script is ``script(peer)``, called in the connection's thread; ``peer.index`` says which
connection it is (0 for the first), so a scenario can misbehave on the first connection and
serve the rest normally (``peer.serve_forever()``). Responses are OpenAI-style SSE
chat-completion chunks; the server remembers the text it sent per request prompt, so a test
can check that a section reported done carries exactly that text.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hpack
import hyperframe.frame

__all__ = [
    "HostileServer",
    "Peer",
    "Request",
    "data_frame",
    "goaway_frame",
    "headers_frame",
    "rst_stream_frame",
    "sse_chunk",
    "sse_finish",
    "window_update_frame",
]

#: Largest value a flow-control window may reach (RFC 9113 §6.9.1).
MAX_WINDOW = 2**31 - 1

#: Scenario prompts start ``section <name> r<run>`` (``hostile_runner.prompt_of``), maybe padded.
_PROMPT = re.compile(rb'"content":\s*"(section [a-z]+ r[0-9]+)')

Script = Callable[["Peer"], None]


def sse_chunk(text: str) -> bytes:
    """One OpenAI ``chat.completion.chunk`` SSE event carrying ``text``."""
    payload = {
        "id": "chatcmpl-hostile",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def sse_finish() -> bytes:
    """The closing chunk (``finish_reason: stop``) and the ``[DONE]`` sentinel."""
    payload = {
        "id": "chatcmpl-hostile",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\ndata: [DONE]\n\n"


def data_frame(stream_id: int, payload: bytes, *, end_stream: bool = False) -> bytes:
    frame = hyperframe.frame.DataFrame(stream_id, data=payload)
    if end_stream:
        frame.flags.add("END_STREAM")
    return frame.serialize()


def headers_frame(
    stream_id: int, headers: Iterable[tuple[str, str]], *, end_stream: bool = False
) -> bytes:
    """A HEADERS frame ``h2`` would refuse to send; never-indexed literals, so the peer's HPACK
    dynamic table (shared with the headers ``h2`` encodes) is left as it was."""
    block = hpack.Encoder().encode([hpack.NeverIndexedHeaderTuple(k, v) for k, v in headers])
    frame = hyperframe.frame.HeadersFrame(stream_id, data=block)
    frame.flags.add("END_HEADERS")
    if end_stream:
        frame.flags.add("END_STREAM")
    return frame.serialize()


def window_update_frame(stream_id: int, increment: int) -> bytes:
    return hyperframe.frame.WindowUpdateFrame(stream_id, window_increment=increment).serialize()


def rst_stream_frame(stream_id: int, error_code: int) -> bytes:
    return hyperframe.frame.RstStreamFrame(stream_id, error_code=error_code).serialize()


def goaway_frame(last_stream_id: int, error_code: int = 0) -> bytes:
    return hyperframe.frame.GoAwayFrame(
        0, last_stream_id=last_stream_id, error_code=error_code
    ).serialize()


@dataclass
class Request:
    """One request stream as the server saw it."""

    stream_id: int
    headers: dict[str, str]
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False
    reset_code: int | None = None
    #: ``time.monotonic()`` when the client's RST_STREAM arrived (system-wide clock).
    reset_at: float | None = None

    @property
    def prompt(self) -> str | None:
        """The ``section <name> r<run>`` a scenario prompt starts with; found in the part of the
        body received so far, so it is known while an upload still waits for window."""
        match = _PROMPT.search(self.body)
        return match.group(1).decode() if match else None


class ScriptTimeout(AssertionError):
    """The client did not do what the script waited for in time."""


class Peer:
    """The server side of one accepted connection, driven by a scenario script."""

    def __init__(
        self,
        server: HostileServer,
        sock: socket.socket,
        index: int,
        local_settings: Mapping[int, int] | None,
    ) -> None:
        self.server = server
        self.sock = sock
        self.index = index
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        if local_settings:
            self.conn.local_settings = h2.settings.Settings(
                client=False, initial_values=dict(local_settings)
            )
        self.requests: dict[int, Request] = {}
        self.pings_received = 0
        self.ping_acks_received = 0
        self.settings_acked = 0
        self.closed = False  # the client closed its side, or the socket failed
        #: Give received request bytes back to the client's stream windows (a scenario that
        #: wants uploads to wait for window turns this off).
        self.return_window = True
        self.protocol_error: Exception | None = None
        self._handed_out: set[int] = set()
        self._sent: dict[int, list[str]] = {}
        self.conn.initiate_connection()
        self.flush()

    # -- reading -------------------------------------------------------------------------------

    def pump(self, timeout: float = 0.05) -> list[h2.events.Event]:
        """One socket read (up to ``timeout``), fed to h2; its automatic answers (SETTINGS ACK,
        PING ACK, WINDOW_UPDATE for received data) are written back at once."""
        if self.closed:
            time.sleep(timeout)
            return []
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return []
        except OSError:
            self.closed = True
            return []
        if not data:
            self.closed = True
            return []
        if self.protocol_error is not None:
            return []  # our own raw frames confused h2: stop interpreting, keep draining
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.protocol_error = exc
            return []
        for event in events:
            self._note(event)
        self.flush()
        return events

    def _note(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            headers = {str(k): str(v) for k, v in event.headers or ()}
            self.requests[event.stream_id] = Request(event.stream_id, headers)
        elif isinstance(event, h2.events.DataReceived):
            request = self.requests.get(event.stream_id)
            if request is not None:
                request.body += event.data or b""
            if event.flow_controlled_length and self.return_window:
                # A stream already gone has nothing to give back.
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
        elif isinstance(event, h2.events.StreamEnded):
            request = self.requests.get(event.stream_id)
            if request is not None:
                request.complete = True
                prompt = request.prompt
                if prompt is not None:
                    self.server.note_request(prompt)
        elif isinstance(event, h2.events.StreamReset):
            request = self.requests.get(event.stream_id)
            if request is not None:
                request.reset_code = int(event.error_code or 0)
                request.reset_at = time.monotonic()
        elif isinstance(event, h2.events.PingReceived):
            self.pings_received += 1
        elif isinstance(event, h2.events.PingAckReceived):
            self.ping_acks_received += 1
        elif isinstance(event, h2.events.SettingsAcknowledged):
            self.settings_acked += 1

    def wait(self, predicate: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
        """Read until ``predicate()`` holds; ``ScriptTimeout`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline or self.server.stopping:
                raise ScriptTimeout(f"connection {self.index}: gave up waiting for {what}")
            self.pump()

    def wait_requests(self, n: int, *, complete: bool = True, timeout: float = 5.0) -> list[int]:
        """The stream ids of the next ``n`` requests (with their whole body, if ``complete``)."""

        def ready() -> list[int]:
            return [
                sid
                for sid, request in sorted(self.requests.items())
                if sid not in self._handed_out and (request.complete or not complete)
            ]

        self.wait(lambda: len(ready()) >= n, timeout, f"{n} requests")
        ids = ready()[:n]
        self._handed_out.update(ids)
        return ids

    def prompt(self, stream_id: int) -> str:
        prompt = self.requests[stream_id].prompt
        assert prompt is not None, f"stream {stream_id} has no complete request body"
        return prompt

    def section(self, stream_id: int) -> str:
        """The section name in a scenario prompt (``section <name> r<run>``)."""
        return self.prompt(stream_id).split(" ")[1]

    # -- writing -------------------------------------------------------------------------------

    def flush(self, extra: bytes = b"") -> None:
        """Write what h2 has queued, then ``extra`` raw frames, in one ``sendall``."""
        data = self.conn.data_to_send() + extra
        if not data or self.closed:
            return
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True

    def respond(self, stream_id: int, status: int = 200) -> None:
        self.conn.send_headers(
            stream_id, [(":status", str(status)), ("content-type", "text/event-stream")]
        )

    def chunk(self, stream_id: int, text: str) -> None:
        """Queue one content chunk through h2 (``flush()`` writes it)."""
        self.conn.send_data(stream_id, sse_chunk(text))
        self._sent.setdefault(stream_id, []).append(text)

    def finish(self, stream_id: int) -> None:
        """Queue the closing chunk, ``[DONE]`` and END_STREAM; the text counts as complete."""
        self.conn.send_data(stream_id, sse_finish(), end_stream=True)
        self.server.note_finished(self.requests[stream_id].prompt, self.sent_text(stream_id))

    def raw_chunk(self, stream_id: int, text: str) -> bytes:
        """A content chunk as a raw DATA frame (for when h2 would refuse, after GOAWAY)."""
        self._sent.setdefault(stream_id, []).append(text)
        return data_frame(stream_id, sse_chunk(text))

    def raw_finish(self, stream_id: int) -> bytes:
        self.server.note_finished(self.requests[stream_id].prompt, self.sent_text(stream_id))
        return data_frame(stream_id, sse_finish(), end_stream=True)

    def sent_text(self, stream_id: int) -> str:
        return "".join(self._sent.get(stream_id, ()))

    def serve(self, stream_id: int, texts: Iterable[str]) -> None:
        """A whole well-behaved response on one stream, written at once."""
        self.respond(stream_id)
        for text in texts:
            self.chunk(stream_id, text)
        self.finish(stream_id)
        self.flush()

    def serve_forever(self, *, open_windows: bool = False) -> None:
        """Answer every new complete request normally until the client goes away.

        ``open_windows``: first give each new request stream enough window for its body (for
        connections whose SETTINGS started streams at a zero window).
        """
        opened: set[int] = set()
        while not self.closed and not self.server.stopping:
            self.pump()
            for sid, request in sorted(self.requests.items()):
                if sid in self._handed_out:
                    continue
                if open_windows and sid not in opened and request.reset_code is None:
                    opened.add(sid)
                    self.conn.increment_flow_control_window(1 << 20, stream_id=sid)
                    self.flush()
                if request.complete:
                    self._handed_out.add(sid)
                    name = request.prompt or "?"
                    self.serve(sid, [f"{name} one ", f"{name} two ", f"{name} three"])

    def idle_for(self, seconds: float) -> None:
        """Keep reading (answering PINGs, noting resets) for ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.closed and not self.server.stopping:
            self.pump(min(0.05, max(0.001, deadline - time.monotonic())))

    def idle(self) -> None:
        """Keep reading (and answering PINGs) without sending anything, until closed."""
        while not self.closed and not self.server.stopping:
            self.pump()

    def black_hole(self) -> None:
        """Keep the TCP connection open but never read or write again (a dead peer)."""
        while not self.server.stopping:
            time.sleep(0.05)

    def drop(self) -> None:
        """Reset the TCP connection at once (RST, not FIN): a crashed peer or a middlebox."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()
        self.closed = True


class HostileServer:
    """Accepts h2c connections on loopback and runs ``script(peer)`` for each, in its thread.

    After the script returns the connection keeps being read (PINGs answered) until the client
    closes it or the server is closed. ``local_settings(index)`` gives a connection's first
    SETTINGS; an h2c client sends its first requests before it has read them, so a setting that
    restricts the client (a smaller window) is better sent mid-connection
    (``peer.conn.update_settings``) once the client has acknowledged the first. Exceptions of a
    script (other than ``ScriptTimeout``, which a test inspects through its own assertions) are
    kept in ``errors``.
    """

    def __init__(
        self, script: Script, *, local_settings: Callable[[int], Mapping[int, int]] | None = None
    ) -> None:
        self._script = script
        self._local_settings = local_settings
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.peers: list[Peer] = []
        self.errors: list[BaseException] = []
        self.timeouts: list[ScriptTimeout] = []
        #: What a script tells its test, e.g. which section got the odd stream (stream ids are
        #: handed out in the order the client's threads open them, not in section order).
        self.notes: dict[str, str] = {}
        self.stopping = False
        self._lock = threading.Lock()
        self._requested: dict[str, int] = {}
        self._finished: dict[str, list[str]] = {}
        self._threads: list[threading.Thread] = []
        self._accepted = 0
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    @property
    def connections(self) -> int:
        return len(self.peers)

    def requested(self, prompt: str) -> int:
        """How many complete requests carried ``prompt``."""
        with self._lock:
            return self._requested.get(prompt, 0)

    def finished_text(self, prompt: str) -> str | None:
        """The full text of the last response for ``prompt`` the server ended with END_STREAM."""
        with self._lock:
            texts = self._finished.get(prompt)
            return texts[-1] if texts else None

    def finished_texts(self, prompt: str) -> list[str]:
        """The full text of every response for ``prompt`` the server ended with END_STREAM."""
        with self._lock:
            return list(self._finished.get(prompt, ()))

    def note_request(self, prompt: str) -> None:
        with self._lock:
            self._requested[prompt] = self._requested.get(prompt, 0) + 1

    def note_finished(self, prompt: str | None, text: str) -> None:
        if prompt is not None:
            with self._lock:
                self._finished.setdefault(prompt, []).append(text)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        with self._lock:
            index = self._accepted
            self._accepted += 1
        settings = self._local_settings(index) if self._local_settings else None
        try:
            peer = Peer(self, sock, index, settings)
            with self._lock:
                self.peers.append(peer)
            self._script(peer)
            peer.idle()
        except ScriptTimeout as exc:
            self.timeouts.append(exc)
        except BaseException as exc:  # surfaced by the test, not lost in a thread
            self.errors.append(exc)
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        self.stopping = True
        self._listener.close()
        for peer in list(self.peers):
            with contextlib.suppress(OSError):
                peer.sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
