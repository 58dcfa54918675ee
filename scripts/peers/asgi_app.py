#!/usr/bin/env python
"""The asyncio peer as a service: the same routes and SSE events, served by an ASGI server.

What a team would build instead of backend_ai if it rewrote the app for asyncio: a plain ASGI
app, ``AsyncOpenAI`` with one task per section feeding an ``asyncio.Queue``, each chunk sent as
the same ``data: {"type": "chunk", "section", "seq", "content"}`` frame the Flask service sends,
so ``scripts/load_test_streaming.py`` can drive and verify both the same way. The prompts are
the service's own (``backend_ai.app.prompts``); the upstream client is ``AsyncOpenAI`` over an
HTTP/2 (prior knowledge) ``httpx.AsyncClient`` with a large pool, like the engine's pooled
client. It reads ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``.

    python scripts/peers/asgi_app.py --port 8010 --workers 2     # uvicorn, else hypercorn
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import openai

from backend_ai.app.prompts import (
    COMPARE_SECTION,
    DREAM_SECTIONS,
    ICHING_SECTIONS,
    TAROT_SECTION,
    SectionPrompt,
)
from backend_ai.streaming.config import PRESETS

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_encode = json.JSONEncoder(separators=(",", ":")).encode
_client: openai.AsyncOpenAI | None = None


def client() -> openai.AsyncOpenAI:
    """One client per worker process, built inside its event loop."""
    global _client
    if _client is None:
        http = httpx.AsyncClient(
            http1=False,
            http2=True,
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
            timeout=httpx.Timeout(60.0, connect=15.0),
        )
        _client = openai.AsyncOpenAI(
            base_url=os.environ.get("OPENAI_BASE_URL"),
            api_key=os.environ.get("OPENAI_API_KEY", "sk-peer-dummy"),
            max_retries=0,
            http_client=http,
        )
    return _client


def _frame(payload: dict[str, Any]) -> bytes:
    return f"data: {_encode(payload)}\n\n".encode()


def _sections(path: str, body: dict[str, Any]) -> list[tuple[str, str, SectionPrompt, str]]:
    """(section, model, prompt, user text) per section of the route, or ValueError."""
    if path == "/dream/interpret-stream":
        text = body["dream"]
        return [(p.section, "", p, p.render(dream=text)) for p in DREAM_SECTIONS]
    if path == "/iching/reading-stream":
        question = body["question"]
        return [
            (p.section, "", p, p.render(question=question, number="1", name="The Creative"))
            for p in ICHING_SECTIONS
        ]
    if path.startswith("/tarot/") and path.endswith("-stream"):
        spread = path[len("/tarot/") : -len("-stream")]
        text = TAROT_SECTION.render(spread=spread, cards="The Star", question=body["question"])
        return [(TAROT_SECTION.section, "", TAROT_SECTION, text)]
    if path == "/compare/stream":
        text = COMPARE_SECTION.render(prompt=body["prompt"])
        return [(m, m, COMPARE_SECTION, text) for m in body["models"]]
    raise LookupError(path)


async def _run(
    sections: list[tuple[str, str, SectionPrompt, str]], body: dict[str, Any], send: Send
) -> None:
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    failed: list[str] = []
    sim = body.get("sim") or {}
    per_section = body.get("sim_sections") or {}

    async def one(name: str, model: str, prompt: SectionPrompt, text: str) -> None:
        preset = PRESETS[prompt.complexity]
        started = time.monotonic()
        seq = chars = 0
        try:
            await queue.put(_frame({"type": "section_start", "section": name, "model": model}))
            controls = {**sim, **per_section.get(name, {})}
            stream = await client().chat.completions.create(
                model=model or preset.model,
                messages=[
                    {"role": "system", "content": prompt.system},
                    {"role": "user", "content": text},
                ],
                temperature=preset.temperature,
                max_tokens=preset.max_tokens,
                stream=True,
                extra_body={"sim": controls} if controls else None,
            )
            finish = None
            async with stream:
                async for chunk in stream:
                    for choice in chunk.choices:
                        if choice.delta.content:
                            await queue.put(
                                _frame(
                                    {
                                        "type": "chunk",
                                        "section": name,
                                        "seq": seq,
                                        "content": choice.delta.content,
                                    }
                                )
                            )
                            seq += 1
                            chars += len(choice.delta.content)
                        finish = choice.finish_reason or finish
            await queue.put(
                _frame(
                    {
                        "type": "section_done",
                        "section": name,
                        "finish_reason": finish,
                        "duration_ms": round((time.monotonic() - started) * 1000, 3),
                        "chars": chars,
                        "chunks": seq,
                    }
                )
            )
        except Exception as exc:
            await queue.put(
                _frame(
                    {
                        "type": "error",
                        "section": name,
                        "code": "upstream_error",
                        "message": type(exc).__name__,
                        "chunks": seq,
                    }
                )
            )
            failed.append(name)
        finally:
            await queue.put(None)

    request_id = uuid.uuid4().hex
    started = time.monotonic()
    names = [s[0] for s in sections]
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )
    await send(
        {
            "type": "http.response.body",
            "body": _frame({"type": "start", "request_id": request_id, "sections": names}),
            "more_body": True,
        }
    )
    tasks = [asyncio.create_task(one(*section)) for section in sections]
    try:
        remaining = len(tasks)
        while remaining:
            frame = await queue.get()
            if frame is None:
                remaining -= 1
                continue
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        done = {
            "type": "done",
            "request_id": request_id,
            "duration_ms": round((time.monotonic() - started) * 1000, 3),
            "completed": [name for name in names if name not in failed],
            "failed": failed,
        }
        await send({"type": "http.response.body", "body": _frame(done), "more_body": False})
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if _client is not None:
                    await _client.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    path = scope["path"]
    if scope["method"] == "GET" and path == "/health":
        await _json(send, 200, {"status": "ok", "server": "asyncio-peer"})
        return
    if scope["method"] != "POST":
        await _json(send, 405, {"error": {"code": "method_not_allowed"}})
        return
    raw = b""
    while True:
        message = await receive()
        raw += message.get("body", b"")
        if not message.get("more_body"):
            break
    try:
        body = json.loads(raw)
        sections = _sections(path, body)
    except LookupError:
        await _json(send, 404, {"error": {"code": "not_found"}})
        return
    except (ValueError, TypeError, KeyError):
        await _json(send, 422, {"error": {"code": "invalid_request"}})
        return
    with contextlib.suppress(OSError):  # the client went away: the tasks are cancelled
        await _run(sections, body, send)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8010)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--server", choices=("auto", "uvicorn", "hypercorn"), default="auto")
    args = parser.parse_args(argv)
    scripts = str(Path(__file__).resolve().parent.parent)
    server = args.server
    if server == "auto":
        server = "uvicorn" if importlib.util.find_spec("uvicorn") else "hypercorn"
    if server == "uvicorn":
        import uvicorn

        uvicorn.run(
            "peers.asgi_app:app",
            app_dir=scripts,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
            access_log=False,
        )
        return 0
    command = [
        sys.executable,
        "-m",
        "hypercorn",
        "--bind",
        f"{args.host}:{args.port}",
        "--workers",
        str(args.workers),
        "--log-level",
        args.log_level,
        "peers.asgi_app:app",
    ]
    env = {**os.environ, "PYTHONPATH": scripts + os.pathsep + os.environ.get("PYTHONPATH", "")}
    os.execve(sys.executable, command, env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
