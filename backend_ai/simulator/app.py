"""The simulator's ASGI application: OpenAI's routes under ``/v1``, controls under ``/_sim``.

``/_sim`` routes need no API key and are never counted in the stats, so a test can read and
reset them without disturbing what it measures.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any
from urllib.parse import parse_qs

from . import wire
from .asgi import Receive, Scope, Send, read_body, send_response
from .completions import handle_chat_completion, handle_responses
from .profile import DEFAULT_PROFILE, Budget, SimKeyError, SimProfile, parse_budget, parse_sim_keys
from .request import RequestError, bearer_key
from .state import SimulatorState

__all__ = ["SimulatorApp", "create_app"]

logger = logging.getLogger(__name__)

_MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "o4-mini")


def _model_object(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 1_715_367_049, "owned_by": "simulator"}


def _request_id_header() -> tuple[bytes, bytes]:
    return (b"x-request-id", b"req_" + uuid.uuid4().hex.encode())


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _is_azure_chat(path: str) -> bool:
    """Azure OpenAI's shape: ``/openai/deployments/{deployment}/chat/completions``."""
    parts = path.split("/")
    return (
        len(parts) == 6
        and parts[1:3] == ["openai", "deployments"]
        and bool(parts[3])
        and parts[4:] == ["chat", "completions"]
    )


def _azure_api_version(scope: Scope) -> str:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return query.get("api-version", [""])[0]


class SimulatorApp:
    """ASGI callable holding one :class:`SimulatorState`."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if path == "/v1/chat/completions" and method == "POST":
            await handle_chat_completion(self.state, scope, receive, send)
        elif path == "/v1/responses" and method == "POST":
            await handle_responses(self.state, scope, receive, send)
        elif _is_azure_chat(path) and method == "POST":
            if not _azure_api_version(scope):
                await self._error(
                    send, 404, "Resource not found: the 'api-version' query parameter is missing"
                )
            else:
                await handle_chat_completion(self.state, scope, receive, send)
        elif path.startswith("/_sim/"):
            await self._control(scope, receive, send)
        elif path == "/v1/models" or path.startswith("/v1/models/"):
            await self._models(scope, send)
        else:
            await self._error(send, 404, f"Invalid URL ({method} {path})")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    async def _error(
        send: Send, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        await send_response(
            send,
            status,
            wire.error_body(status, message, param=param, code=code),
            headers=[_request_id_header()],
        )

    async def _models(self, scope: Scope, send: Send) -> None:
        if scope["method"] != "GET":
            await self._error(send, 405, f"Method not allowed ({scope['method']} {scope['path']})")
            return
        try:
            bearer_key(scope)
        except RequestError as exc:
            await self._error(send, exc.status, exc.message, param=exc.param, code=exc.code)
            return
        path = scope["path"]
        if path == "/v1/models":
            body = {"object": "list", "data": [_model_object(m) for m in _MODELS]}
        else:
            body = _model_object(path.removeprefix("/v1/models/"))
        await send_response(send, 200, _json(body), headers=[_request_id_header()])

    async def _control(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        state = self.state
        if path == "/_sim/health" and method == "GET":
            await send_response(send, 200, _json({"ok": True, "time": time.time()}))
        elif path == "/_sim/stats" and method == "GET":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            include_records = query.get("records", ["1"])[0] not in ("0", "false", "no")
            snapshot = state.stats.snapshot(include_records=include_records)
            await send_response(send, 200, _json(snapshot))
        elif path == "/_sim/reset" and method == "POST":
            await read_body(receive)
            state.reset()
            await send_response(send, 200, _json({"ok": True, **state.config_snapshot()}))
        elif path == "/_sim/config" and method == "GET":
            await send_response(send, 200, _json(state.config_snapshot()))
        elif path == "/_sim/config" and method == "POST":
            await self._configure(receive, send)
        elif path in ("/_sim/health", "/_sim/stats", "/_sim/reset", "/_sim/config"):
            await self._error(send, 405, f"Method not allowed ({method} {path})")
        else:
            await self._error(send, 404, f"Invalid URL ({method} {path})")

    async def _configure(self, receive: Receive, send: Send) -> None:
        """``POST /_sim/config``: ``defaults`` apply over the start-up defaults; ``budget``
        replaces the budget (null or ``{}`` removes the limits). An absent key changes nothing."""
        raw = await read_body(receive)
        try:
            config = json.loads(raw or b"{}")
        except ValueError:
            config = None
        if not isinstance(config, dict):
            await self._error(send, 400, "The config body must be a JSON object.")
            return
        unknown = set(config) - {"defaults", "budget"}
        if unknown:
            name = sorted(unknown)[0]
            await self._error(send, 400, f"Unknown config key {name!r}.", param=name)
            return
        try:
            defaults: SimProfile | None = None
            budget: Budget | None = None
            if "defaults" in config:
                keys = parse_sim_keys(config["defaults"], source="defaults")
                defaults = self.state.startup_defaults.with_keys(keys)
            if "budget" in config:
                budget = parse_budget(config["budget"])
        except SimKeyError as exc:
            await self._error(send, 400, str(exc), param=exc.param)
            return
        self.state.configure(defaults=defaults, budget=budget)
        logger.info("simulator reconfigured: %s", self.state.config_snapshot())
        await send_response(send, 200, _json({"ok": True, **self.state.config_snapshot()}))


def create_app(
    defaults: SimProfile = DEFAULT_PROFILE, budget: Budget | None = None
) -> SimulatorApp:
    """App factory: a fresh state with the given start-up defaults and budget."""
    return SimulatorApp(SimulatorState(defaults, budget))
