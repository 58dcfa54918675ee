#!/usr/bin/env python
"""Probe an OpenAI-compatible server for what backend_ai relies on, and print what differs.

    python scripts/try_openai_compatible.py http://127.0.0.1:8080/v1 [--model NAME] [--key KEY]

It reads the raw stream (HTTP version, first and last chunk, whether usage comes with and
without ``stream_options.include_usage``, whether ``/responses`` streams), then runs the engine
itself: three parallel sections on chat completions and on the Responses API, over HTTP/1.1
and over HTTP/2 with prior knowledge, and one run closed mid-stream (see the server's log for
whether it stopped generating). The results fill the table in docs/PROTOCOL.md.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import httpx
import openai

from backend_ai.streaming import (
    ParallelStreamManager,
    PoolSettings,
    RunOptions,
    StreamConfig,
    build_http_client,
)
from backend_ai.streaming.events import ContentChunk, SectionDone, SectionError


def _raw(base: str, key: str, model: str) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "max_tokens": 8,
    }
    for extra in ({}, {"stream_options": {"include_usage": True}}):
        with httpx.stream(
            "POST", base + "/chat/completions", json={**body, **extra}, headers=headers
        ) as response:
            lines = [line for line in response.iter_lines() if line]
        usage = any('"usage":{' in line for line in lines)
        print(f"chat {extra or '(no stream_options)'}: {response.http_version}, usage: {usage}")
        print("  first:", lines[0][:240] if lines else None)
        print("  last:", [line[:240] for line in lines[-2:]])
    responses_body = {"model": model, "input": "hi", "stream": True, "max_output_tokens": 8}
    with httpx.stream(
        "POST", base + "/responses", json=responses_body, headers=headers
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    kinds = [line[7:] for line in lines if line.startswith("event: ")]
    print(f"responses: {response.status_code}, events: {sorted(set(kinds))}")


def _engine(base: str, key: str, model: str) -> None:
    for label, pool in (
        ("HTTP/1.1", PoolSettings()),
        ("HTTP/2 prior knowledge", PoolSettings(http2_prior_knowledge=True)),
    ):
        http = build_http_client(pool)
        client = openai.OpenAI(api_key=key, base_url=base, http_client=http)  # type: ignore[arg-type]
        manager = ParallelStreamManager(client, options=RunOptions(heartbeat_s=None, deadline_s=60))
        try:
            for api in ("chat_completions", "responses"):
                configs = [
                    StreamConfig(f"s{i}", f"Tell me about {i}", model=model, max_tokens=24, api=api)
                    for i in range(3)
                ]
                started = time.perf_counter()
                ends = {
                    e.section: (e.finish_reason, e.chunks, e.usage)
                    if isinstance(e, SectionDone)
                    else (e.code.value, e.message)
                    for e in manager.stream(configs)
                    if isinstance(e, SectionDone | SectionError)
                }
                print(f"engine {label} {api} ({time.perf_counter() - started:.2f} s): {ends}")
            configs = [
                StreamConfig(f"c{i}", f"Tell me about {i}", model=model, max_tokens=1500)
                for i in range(3)
            ]
            events = manager.stream(configs)
            chunks = 0
            for event in events:
                chunks += isinstance(event, ContentChunk)
                if chunks >= 6:
                    break
            events.close()
            print(f"engine {label}: run closed after {chunks} chunks")
        finally:
            manager.close()
            http.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url", help="the server's OpenAI base URL, e.g. http://host:8080/v1")
    parser.add_argument("--model", default="gpt-4o")
    parser.add_argument("--key", default="sk-no-key-needed")
    args = parser.parse_args(argv)
    base = args.base_url.rstrip("/")
    _raw(base, args.key, args.model)
    _engine(base, args.key, args.model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
