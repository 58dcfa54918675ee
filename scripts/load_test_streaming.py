#!/usr/bin/env python
"""Load test: many real SSE clients at once against the streaming service, every chunk checked.

Each of ``--concurrent`` virtual users opens an HTTP/1.1 connection (kept alive between its
requests unless ``--no-keepalive``), POSTs the route's JSON payload and reads the SSE stream to
its end. For every request it records the time to the first response byte, the first SSE event,
the first content chunk and the end, and it verifies the stream: within each section the chunk
``seq`` numbers must run 0, 1, 2, ... with no gap (loss) and no repeat (duplicate), each
section's ``section_done``/``error`` must agree with the number of chunks received, and the
stream must end with ``done`` (the checker the tests use, ``tests/support/protocol.py``). The
exit code is 1 on any loss, duplicate, missing ``done`` or other protocol violation.

The client is a small asyncio HTTP/1.1 + SSE reader on raw sockets (no HTTP library on the hot
path) so that it is not the bottleneck; its own CPU use is measured and reported.

``--spawn`` starts its own upstream simulator (fixed profile, no jitter, so the upstream TTFT is
known and the service's overhead is first chunk - TTFT) and the service under gunicorn
(``GunicornProcess``, as ``backend-ai serve`` runs it) pointed at it, and stops both at the
end; ``--server asgi-peer`` spawns the asyncio peer app (``scripts/peers/asgi_app.py``) under
an ASGI server instead, for comparison.
``--upstream paced`` spawns ``scripts/peers/paced_upstream.py`` instead of the simulator: the
same profile at a fraction of the simulator's CPU per chunk (``--upstream-cpu N`` pins it to
core N), so that on a small machine the server's CPU per chunk is the server's, not a starved
upstream's. ``--engine-tree DIR`` runs the spawned server on the ``backend_ai`` package found in
``DIR`` (a checkout or a ``git archive`` of another commit), for A/B runs back to back with the
same script, client and upstream.

    python scripts/load_test_streaming.py --spawn --concurrent 50 --requests 200
    python scripts/load_test_streaming.py --url http://127.0.0.1:8000 --concurrent 10 --duration 30
    python scripts/load_test_streaming.py --spawn --upstream paced --sweep 20,40 --duration 20 \
        --engine-tree /tmp/tree-main --json /tmp/load-main.json

The parts live in the ``load_test`` package beside this file (client, report, processes,
sweep, cli); this file is the command.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The load_test and peers packages sit beside this file; tests.support (the protocol checker,
# the percentile, the process helpers shared with the tests) under the repository root.
SCRIPTS = Path(__file__).resolve().parent
for _path in (SCRIPTS, SCRIPTS.parent):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from load_test.cli import main  # noqa: E402

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
