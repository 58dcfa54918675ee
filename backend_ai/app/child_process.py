"""Child processes that do not outlive us: gunicorn, ``redis-server``, the scaling run's servers.

A test run that crashes, or a ``serve`` killed with ``kill -9``, must leave no server behind
holding a port. Linux can send a child a signal when its parent dies (``PR_SET_PDEATHSIG``);
:func:`die_with_parent` asks for SIGTERM, the signal every child here stops gracefully on. It is
one ``prctl`` call, made through ``ctypes`` because the standard library has no binding for it.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import sys

__all__ = ["die_with_parent"]

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """The ``preexec_fn`` of a child's ``subprocess.Popen``: SIGTERM to it when we die.

    It runs in the child between fork and exec. A no-op where the kernel has no such request
    (anything but Linux): there a child may outlive a crashed parent.
    """
    if sys.platform != "linux":
        return
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
