"""The benchmark of ``scripts/benchmark_streaming_performance.py``, one module per part.

- ``profiles``: the sizes of a ``full`` and a ``quick`` run;
- ``session``: ``Bench``, one simulator and the contenders of a run, and the rounding helpers;
- ``scenarios``: the parts, each a function of a ``Bench`` (fan-out, first event and chunk,
  the service, CPU per chunk, HTTP/2 and cancellation, the peers, the timeline);
- ``report``: the markdown tables; ``plot``: the timeline picture; ``machine``: what it ran on;
- ``cli``: the command line.

The contenders come from the ``peers`` package beside this one, the service run from
``load_test``; the entry point puts ``scripts/`` and the repository root on ``sys.path``.
"""
