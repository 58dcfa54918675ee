"""What the tests and the scripts under ``scripts/`` share: the stream-protocol checker
(``protocol``), the SSE parsers and readers (``sse``), the percentile (``stats``), the process
helpers (``process``), the environment of a service child on a loopback upstream
(``service``) and a bounded wait for a condition (``waiting``).

It lives under ``tests/`` and not in the ``backend_ai`` package because nothing the package
ships uses it: it checks the service from the outside, as a client does, and the installed
package should not carry test tooling. The tests import it as ``tests.support`` (``pythonpath``
in ``setup.cfg`` puts the repository root on ``sys.path``); the scripts, which are run from a
checkout and never installed, put the repository root on ``sys.path`` themselves, the way they
already put their own folder there for ``peers``.
"""
