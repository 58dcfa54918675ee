"""The load test of ``scripts/load_test_streaming.py``, one module per part.

- ``client``: the virtual users (raw asyncio HTTP/1.1 + SSE), each stream checked with the
  protocol checker the tests use;
- ``report``: a level's summary (the JSON written), its text, the sweep table and capacity;
- ``processes``: what ``--spawn`` starts (an upstream, the service under gunicorn or the ASGI
  peer) and the CPU each of them used;
- ``sweep``: one level measured, and whether any level broke the protocol;
- ``cli``: the command line.

The modules import ``tests.support`` and, for ``--upstream paced``, the ``peers`` package: the
entry point puts the repository root and ``scripts/`` on ``sys.path`` first.
"""
