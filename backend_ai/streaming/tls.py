"""A TLS byte stream over a plain blocking socket that one thread may read while others write.

Why this exists: an HTTP/2 connection has a reader thread blocked in ``recv`` while other
threads send headers, window updates, resets and pings. Over ``ssl.SSLSocket`` that means
``SSL_read`` and ``SSL_write`` running at the same time on one OpenSSL ``SSL`` object, which
OpenSSL does not allow: an ``SSL`` object must not be used by two threads at once (a reader
and a writer racing right after the handshake, when TLS 1.3 session tickets arrive, is a known
crash). CPython has changed how ``SSLSocket`` copes with this between patch releases — one
release added a lock that made a blocked ``recv`` block every ``sendall`` (a deadlock for a
reader/writer pair like ours), a later one took it out again — so our correctness must not
hang on which patch release runs.

Why hand-written: the standard library offers only ``SSLSocket`` or the Sans-I/O
``SSLObject`` over two ``MemoryBIO`` buffers (the model asyncio's ``sslproto`` and
``websockets`` build on); no maintained library gives a thread-safe blocking TLS stream. This
module is that stream, on ``SSLContext.wrap_bio`` only.

The rules it keeps:

- One lock (``_ssl_lock``) guards the ``SSLObject`` and both BIOs, and is held only for
  in-memory calls (``read``, ``write``, ``do_handshake``, BIO reads and writes), never across
  socket I/O: a thread blocked in the raw socket's ``recv`` never stops another thread from
  encrypting and sending.
- Encrypted records leave in the order the ``SSLObject`` produced them: whatever the outgoing
  BIO holds is moved, under ``_ssl_lock``, to one ordered queue, and the queue is sent under a
  second lock (``_send_lock``). A writer waits for that lock; a reader that produced records
  (a TLS 1.3 KeyUpdate reply, an alert) only queues them and tries the lock without waiting.
  Whoever holds the lock looks at the queue again after releasing it, so no record is left
  behind (the pattern of ``Http2Connection._flush``).
- End of stream is ``b""`` for a ``close_notify`` and for a TCP end-of-file without one. That
  is ``SSLSocket``'s default (``suppress_ragged_eofs=True``), kept on purpose: HTTP framing
  finds a truncated message itself (``Content-Length``, chunked encoding, HTTP/2's
  ``END_STREAM``), many servers close without ``close_notify``, and reporting those closes as
  errors would turn ordinary ends into failures.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections import deque

__all__ = ["TLSStream"]

#: Most bytes taken from the raw socket at once (a few TLS records of 16 KiB).
_RAW_READ = 64 * 1024
#: Plaintext encrypted per step of ``sendall``: the ciphertext waiting to be sent stays this
#: small whatever the size of the data.
_WRITE_STEP = 256 * 1024


class TLSStream:
    """A client TLS connection over a connected blocking socket.

    Thread model: one thread at a time reads (``recv``); any threads may write (``sendall``)
    meanwhile; ``shutdown`` and ``close`` may come from any thread and wake a blocked reader.
    ``has_data_or_eof`` is for an idle connection, while no other thread uses it.
    """

    def __init__(
        self,
        sock: socket.socket,
        ssl_object: ssl.SSLObject,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
    ) -> None:
        """Use ``connect``: it runs the handshake first."""
        self._sock = sock
        self._ssl = ssl_object
        self._incoming = incoming
        self._outgoing = outgoing
        self._ssl_lock = threading.Lock()
        self._sendall_lock = threading.Lock()  # one ``sendall`` at a time: its bytes stay together
        self._send_lock = threading.Lock()
        self._outbound: deque[bytes] = deque()  # records to send, in order; under _ssl_lock
        self._buffered = b""  # decrypted by ``has_data_or_eof``, not yet returned by ``recv``
        self._eof = False
        self._shut_down = False
        self._send_error: OSError | None = None

    @classmethod
    def connect(
        cls,
        sock: socket.socket,
        context: ssl.SSLContext,
        *,
        server_hostname: str,
        timeout_s: float | None,
    ) -> TLSStream:
        """Run the client handshake on ``sock``, within ``timeout_s`` in all.

        Raises ``TimeoutError`` when the handshake takes longer, ``ssl.SSLError`` when it fails
        (a certificate that does not verify, no common protocol) and ``OSError`` when the
        connection breaks. The socket's timeout is left as the handshake's last step set it.
        """
        incoming = ssl.MemoryBIO()
        outgoing = ssl.MemoryBIO()
        ssl_object = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
        stream = cls(sock, ssl_object, incoming, outgoing)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                ssl_object.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            except ssl.SSLError:
                if outgoing.pending:  # the alert that tells the server why
                    with contextlib.suppress(OSError):
                        sock.sendall(outgoing.read())
                raise
            if outgoing.pending:
                stream._set_remaining(deadline)
                sock.sendall(outgoing.read())
            if done:
                return stream
            stream._set_remaining(deadline)
            data = sock.recv(_RAW_READ)
            if data:
                incoming.write(data)
            else:
                incoming.write_eof()  # the next step raises ``ssl.SSLEOFError``

    def _set_remaining(self, deadline: float | None) -> None:
        if deadline is None:
            self._sock.settimeout(None)
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the TLS handshake timed out")
        self._sock.settimeout(remaining)

    # -- reading -----------------------------------------------------------------------------
    def recv(self, bufsize: int, /) -> bytes:
        """Up to ``bufsize`` decrypted bytes, waiting for the network only when none are
        decrypted yet; ``b""`` at the end of the stream.

        A timeout of the raw socket raises ``TimeoutError``, as ``SSLSocket`` does.
        """
        if self._buffered:
            buffered, self._buffered = self._buffered[:bufsize], self._buffered[bufsize:]
            return buffered
        while True:
            with self._ssl_lock:
                data = self._read_locked(bufsize)
                produced = self._take_outgoing_locked()
            if produced:
                self._send_queued(wait=False)
            if data is not None:
                return data
            try:
                raw = self._sock.recv(_RAW_READ)
            except OSError:
                if not self._shut_down:
                    raise
                raw = b""  # shut down here: the peer's reset that may follow changes nothing
            with self._ssl_lock:
                if raw:
                    self._incoming.write(raw)
                else:
                    self._incoming.write_eof()

    def _read_locked(self, bufsize: int) -> bytes | None:
        """Decrypted bytes (records already received, up to ``bufsize``), ``b""`` at the end,
        or None when the next record has not fully arrived."""
        if self._eof:
            return b""
        try:
            data = self._ssl.read(bufsize)
        except ssl.SSLWantReadError:
            return None
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            # TCP closed without ``close_notify`` (``SSLEOFError``): an end, as the module
            # docstring says. The alert OpenSSL queued about it is not sent to a closed
            # connection.
            self._eof = True
            self._outgoing.read()
            return b""
        if not data:  # ``close_notify``
            self._eof = True
            return b""
        # One call returns one record; hand over what else is complete already, so a read
        # that brought many small records is one call for the caller too.
        while len(data) < bufsize and self._incoming.pending:
            try:
                more = self._ssl.read(bufsize - len(data))
            except (ssl.SSLWantReadError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
                break  # an end found here is found again by the next call
            if not more:
                break
            data += more
        return data

    def has_data_or_eof(self) -> bool:
        """Without waiting: whether the connection received application data or its end.

        TLS housekeeping that arrived meanwhile (TLS 1.3 session tickets, a key update) is
        processed and is no reason for True. Application data decrypted here is not lost: the
        next ``recv`` returns it. For an idle connection only (it switches the raw socket to
        non-blocking for the check).
        """
        if self._buffered or self._eof:
            return True
        timeout = self._sock.gettimeout()
        self._sock.settimeout(0)
        try:
            while True:
                with self._ssl_lock:
                    data = self._read_locked(_RAW_READ)
                    self._take_outgoing_locked()
                if data is not None:
                    self._buffered = data
                    return True
                try:
                    raw = self._sock.recv(_RAW_READ)
                except BlockingIOError:
                    return False  # only housekeeping arrived, or nothing at all
                with self._ssl_lock:
                    if raw:
                        self._incoming.write(raw)
                    else:
                        self._incoming.write_eof()
        finally:
            self._sock.settimeout(timeout)
            self._send_queued(wait=False)

    # -- writing -----------------------------------------------------------------------------
    def sendall(self, data: bytes | bytearray | memoryview, /) -> None:
        """Encrypt and send all of ``data``; concurrent calls send one after the other.

        A timeout of the raw socket raises ``TimeoutError``; after a failed send the stream
        is broken (part of a record may be out) and later sends fail too.
        """
        view = memoryview(data).cast("B")
        with self._sendall_lock:
            while view:
                step, view = view[:_WRITE_STEP], view[_WRITE_STEP:]
                with self._ssl_lock:
                    try:
                        while step:
                            step = step[self._ssl.write(step) :]
                    except ssl.SSLWantReadError:
                        # Only a renegotiation waits for the peer in the middle of a write;
                        # ``tls_context`` turns renegotiation off.
                        raise ssl.SSLError("TLS renegotiation is not supported") from None
                    self._take_outgoing_locked()
                self._send_queued(wait=True)

    def _take_outgoing_locked(self) -> bool:
        if not self._outgoing.pending:
            return False
        self._outbound.append(self._outgoing.read())
        return True

    def _send_queued(self, *, wait: bool) -> None:
        """Send the queued records under ``_send_lock``; with ``wait=False`` leave them to
        the thread holding it. The check after releasing catches records queued while this
        thread was sending, which their producer left to it."""
        while True:
            if not self._send_lock.acquire(blocking=wait):
                return
            try:
                self._send_queue_locked(raise_errors=wait)
            finally:
                self._send_lock.release()
            if not self._outbound:
                return
            wait = False

    def _send_queue_locked(self, *, raise_errors: bool) -> None:
        while True:
            with self._ssl_lock:
                if not self._outbound:
                    return
                outbound = self._outbound
                data = outbound[0] if len(outbound) == 1 else b"".join(outbound)
                outbound.clear()
            if self._send_error is not None:
                if raise_errors:
                    raise OSError(f"an earlier TLS write failed: {self._send_error}")
                return
            try:
                self._sock.sendall(data)
            except OSError as exc:
                self._send_error = exc
                if raise_errors:
                    raise
                return  # the reader goes on; the next write reports the failure

    # -- the rest of a socket ----------------------------------------------------------------
    def selected_alpn_protocol(self) -> str | None:
        with self._ssl_lock:
            return self._ssl.selected_alpn_protocol()

    def settimeout(self, value: float | None, /) -> None:
        self._sock.settimeout(value)

    def gettimeout(self) -> float | None:
        return self._sock.gettimeout()

    def fileno(self) -> int:
        return self._sock.fileno()

    def shutdown(self, how: int, /) -> None:
        """Shut the raw socket down (no ``close_notify``): a thread blocked in ``recv`` wakes
        and reads the end of the stream."""
        if how != socket.SHUT_WR:
            self._shut_down = True
        self._sock.shutdown(how)

    def close(self) -> None:
        """Close the raw socket, without ``close_notify``, as ``SSLSocket.close`` does."""
        self._sock.close()
