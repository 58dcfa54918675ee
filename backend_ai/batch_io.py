"""The files of ``backend-ai batch``: JSONL requests in, a crash-safe JSONL journal out.

Input lines take one of two shapes (blank lines are skipped):

* the OpenAI Batch API's — ``{"custom_id": ..., "method": "POST", "url":
  "/v1/chat/completions", "body": {...a chat completion body...}}``; the body goes upstream as
  it is, except ``stream`` and ``stream_options``, which the engine sets;
* a plain one — ``{"id": ..., "prompt": ..., "system": ..., "model": ..., "max_tokens": ...}``
  (only ``id`` and ``prompt`` required).

A line that is neither is reported with its number and skipped; the rest goes on.

The output is a journal: one JSON object per finished item (``id``, ``text``,
``finish_reason``, ``usage``, ``error``), each written with one ``write`` of the whole line to
a file opened for appending, so a crash leaves at most one partial line, always the last one.
Opening the journal again drops such a partial line (its item is redone) and reads the ids of
the complete lines: a rerun skips them, which is how a run resumes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from backend_ai.errors import ConfigError
from backend_ai.streaming.batch import BatchItem, ItemResult
from backend_ai.streaming.config import StreamConfig

__all__ = ["BadLine", "InputReader", "Journal", "count_lines", "result_line"]

_CHAT_URLS = ("/v1/chat/completions", "/chat/completions")
#: Body keys the engine owns: it always streams, and asks for usage itself.
_ENGINE_KEYS = ("stream", "stream_options")


@dataclass(frozen=True, slots=True)
class BadLine:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True, kw_only=True)
class Defaults:
    """What an input line does not say: the command's ``--model``, ``--max-tokens`` and so on."""

    model: str = "gpt-4o-mini"
    max_tokens: int = 500
    temperature: float = 0.7
    system: str | None = None


def _text_of(messages: list[Any]) -> str:
    """The last user message's text: the prompt the engine's estimate and logs see."""
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str) and content.strip():
                return content
            if isinstance(content, list):
                parts = [p.get("text") for p in content if isinstance(p, Mapping)]
                text = " ".join(p for p in parts if isinstance(p, str))
                if text.strip():
                    return text
    raise ValueError("body.messages has no user message with text")


def parse_line(obj: Any, defaults: Defaults) -> BatchItem:
    """One input object as a ``BatchItem``; ``ValueError`` says what is wrong with it."""
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    if "custom_id" in obj:
        item_id = obj["custom_id"]
        if not isinstance(item_id, str) or not item_id:
            raise ValueError("custom_id must be a non-empty string")
        method = obj.get("method", "POST")
        if method != "POST":
            raise ValueError(f"method must be POST, got {method!r}")
        url = obj.get("url", "/v1/chat/completions")
        if url not in _CHAT_URLS:
            raise ValueError(f"url must be /v1/chat/completions, got {url!r}")
        body = obj.get("body")
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError("body.messages must be a non-empty list")
        prompt = _text_of(messages)
        model = body.get("model", defaults.model)
        max_tokens: Any = body.get("max_completion_tokens") or body.get("max_tokens")
        max_tokens = defaults.max_tokens if max_tokens is None else max_tokens
        temperature = body.get("temperature", defaults.temperature)
        extra = {k: v for k, v in body.items() if k not in _ENGINE_KEYS}
        try:
            config = StreamConfig(
                item_id,
                prompt,
                model=model,
                max_tokens=max_tokens,
                temperature=temperature,
                extra_body=extra,
            )
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return BatchItem(item_id, config)
    if "id" in obj:
        item_id = obj["id"]
        if isinstance(item_id, int) and not isinstance(item_id, bool):
            item_id = str(item_id)
        if not isinstance(item_id, str) or not item_id:
            raise ValueError("id must be a non-empty string")
        text = obj.get("prompt")
        if not isinstance(text, str) or not text.strip():
            raise ValueError("prompt must be a non-empty string")
        try:
            config = StreamConfig(
                item_id,
                text,
                model=obj.get("model", defaults.model),
                max_tokens=obj.get("max_tokens", defaults.max_tokens),
                temperature=obj.get("temperature", defaults.temperature),
                system_prompt=obj.get("system", defaults.system),
            )
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return BatchItem(item_id, config)
    raise ValueError('expected a Batch API line ("custom_id", "body") or {"id", "prompt"}')


@dataclass
class InputReader:
    """Yields the input's items lazily, skipping ids in ``skip`` and reporting bad lines.

    Ids must be unique within the input; a repeated id is a bad line (the journal could not
    tell its two results apart).
    """

    path: str
    defaults: Defaults
    skip: set[str] = field(default_factory=set)
    on_bad_line: Callable[[BadLine], None] = lambda bad: None
    bad_lines: int = 0
    skipped: int = 0

    def __iter__(self) -> Iterator[BatchItem]:
        seen: set[str] = set()
        with open(self.path, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    item = parse_line(json.loads(line), self.defaults)
                except ValueError as exc:  # json.JSONDecodeError is a ValueError
                    self._bad(number, str(exc))
                    continue
                if item.id in seen:
                    self._bad(number, f"id {item.id!r} appears earlier in the input")
                    continue
                seen.add(item.id)
                if item.id in self.skip:
                    self.skipped += 1
                    continue
                yield item

    def _bad(self, number: int, reason: str) -> None:
        self.bad_lines += 1
        self.on_bad_line(BadLine(number, reason))


def count_lines(path: str) -> int:
    """Non-blank lines of a file, read in blocks (for the progress bar's total)."""
    count = 0
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                count += 1
    return count


def result_line(result: ItemResult) -> bytes:
    """The journal line of one finished item, newline included."""
    usage = result.usage
    error = result.error
    obj = {
        "id": result.id,
        "text": result.text,
        "finish_reason": result.finish_reason,
        "usage": None
        if usage is None
        else {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
        },
        "error": None if error is None else {"code": error.code, "message": error.message},
    }
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


class Journal:
    """The output file: complete lines only, appended one ``write`` each."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.done_ids: set[str] = set()
        self.dropped_partial = 0  # bytes of a partial last line removed on open
        self.unreadable = 0  # complete lines that are not a result object (left in place)
        self._recover()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.written = 0

    def _recover(self) -> None:
        try:
            handle = open(self.path, "rb+")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return
        with handle:
            data = handle.read()
            end = data.rfind(b"\n") + 1
            if end < len(data):
                # A partial line from a crash: no result is complete without its newline.
                self.dropped_partial = len(data) - end
                handle.truncate(end)
            for raw in data[:end].splitlines():
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw)
                except ValueError:
                    self.unreadable += 1
                    continue
                if isinstance(obj, dict) and isinstance(obj.get("id"), str):
                    self.done_ids.add(obj["id"])
                else:
                    self.unreadable += 1

    def write(self, result: ItemResult) -> None:
        data = result_line(result)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.written += 1

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
