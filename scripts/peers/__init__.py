"""The contenders of the performance comparison, behind one small interface.

Each peer is what a developer would otherwise write (or pick) to stream several chat
completions to one page, run against the same upstream simulator with the same per-section
controls:

* ``sequential`` — the "before": one ``openai`` stream after another in a plain loop.
* ``engine`` — backend_ai's ``ParallelStreamManager`` over its pooled HTTP/2 client.
* ``langchain_parallel`` — LangChain's ``RunnableParallel({...}).stream()`` over
  ``langchain-openai``'s ``ChatOpenAI`` (optional: needs the ``bench`` extra).
* ``asyncio_fanout`` — ``AsyncOpenAI`` with one task per section feeding an ``asyncio.Queue``.
* ``reference`` — a single bare stream, typed SDK chunks or raw lines plus ``json.loads``: the
  CPU floor the others are compared with.

A peer is built once per upstream (``open``), turns a list of :class:`Section` into whatever it
runs (``prepare``, not timed) and then streams it while a :class:`Trace` records, on the
consumer's thread, every content chunk as it becomes visible to the caller (``run``, timed).
A peer never swallows what its design would not: if the library raises, ``run`` raises and the
harness records the run as aborted.

Import this directory as the ``peers`` package (``scripts/`` on ``sys.path``); the benchmark
script and ``tests/benchmarks`` do.
"""

from peers.base import Peer, Section, SectionTrace, Trace, section_configs

__all__ = ["Peer", "Section", "SectionTrace", "Trace", "section_configs"]
