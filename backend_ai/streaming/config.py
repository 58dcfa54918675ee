"""What to stream (``StreamConfig``), how to run it (``RunOptions``) and the model presets.

All configuration is frozen and validated at construction, so a bad value fails fast — before
any thread starts or any byte is produced — with a message that says what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from backend_ai.errors import ConfigError
from backend_ai.streaming import environment
from backend_ai.streaming.environment import Variable

__all__ = [
    "APIS",
    "MAX_CONVERSATION_CHARS",
    "MAX_CONVERSATION_MESSAGES",
    "MAX_SECTIONS",
    "PRESETS",
    "REASONING_EFFORTS",
    "ROLES",
    "Mode",
    "Preset",
    "RunOptions",
    "StreamConfig",
    "optimize_stream_config",
    "validate_configs",
]

#: Most sections one run accepts (the compare page shows up to nine models side by side).
MAX_SECTIONS = 16
#: The upstream APIs a section can stream from: OpenAI's chat completions, or its Responses API.
APIS = ("chat_completions", "responses")
#: Roles a message of a section's conversation may have.
ROLES = ("system", "user", "assistant")
#: Bounds on a section's conversation: a section is one request, not an unbounded transcript.
MAX_CONVERSATION_MESSAGES = 200
MAX_CONVERSATION_CHARS = 200_000
#: Reasoning efforts OpenAI's reasoning models accept.
REASONING_EFFORTS = ("minimal", "low", "medium", "high")


class Mode(StrEnum):
    """How events from several sections are ordered on the way out."""

    INTERLEAVED = "interleaved"  # every chunk as soon as it arrives, whatever its section
    ORDERED = "ordered"  # sections in config order; the head streams live, the rest is buffered
    AS_COMPLETED = "as_completed"  # whole sections, in the order they finish


@dataclass(frozen=True)
class StreamConfig:
    """One section of a run: a single completion streamed from the upstream.

    The section sends either ``prompt`` (with an optional ``system_prompt``) or a whole
    ``conversation`` — the chat history as ``{"role", "content"}`` messages, roles checked —
    never both: with two sources of messages one would silently win.
    """

    section_name: str
    prompt: str = ""
    model: str = "gpt-4o"
    temperature: float = 0.7
    max_tokens: int = 500
    system_prompt: str | None = None
    #: Passed through to the upstream request body (for example the simulator's ``sim`` controls).
    extra_body: Mapping[str, Any] | None = field(default=None, compare=False)
    #: The full chat history to send instead of ``prompt`` (stored as a tuple of
    #: ``(role, content)`` pairs, so the config stays immutable and hashable).
    conversation: Sequence[Mapping[str, str]] | tuple[tuple[str, str], ...] | None = None
    #: Which upstream API streams this section: ``chat_completions`` or ``responses``.
    api: str = "chat_completions"
    #: Ask a reasoning model for this effort; its reasoning then streams as ``reasoning``
    #: events of their own, never mixed into the answer's chunks.
    reasoning_effort: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.section_name, str) or not self.section_name.strip():
            raise ConfigError("section_name must be a non-empty string")
        if self.conversation is not None:
            object.__setattr__(self, "conversation", _checked_conversation(self))
        elif not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ConfigError(f"section {self.section_name!r}: prompt must be a non-empty string")
        if self.api not in APIS:
            raise ConfigError(
                f"section {self.section_name!r}: api must be one of {', '.join(APIS)}, "
                f"got {self.api!r}"
            )
        if self.reasoning_effort is not None and self.reasoning_effort not in REASONING_EFFORTS:
            raise ConfigError(
                f"section {self.section_name!r}: reasoning_effort must be one of "
                f"{', '.join(REASONING_EFFORTS)} or None, got {self.reasoning_effort!r}"
            )
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError(f"section {self.section_name!r}: model must be a non-empty string")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, int | float):
            raise ConfigError(f"section {self.section_name!r}: temperature must be a number")
        if not 0.0 <= self.temperature <= 2.0:
            raise ConfigError(
                f"section {self.section_name!r}: temperature {self.temperature} is outside 0-2"
            )
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int):
            raise ConfigError(f"section {self.section_name!r}: max_tokens must be an integer")
        if self.max_tokens < 1:
            raise ConfigError(
                f"section {self.section_name!r}: max_tokens must be at least 1, "
                f"got {self.max_tokens}"
            )
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            raise ConfigError(f"section {self.section_name!r}: system_prompt must be a string")

    def messages(self) -> list[dict[str, str]]:
        """The chat messages sent upstream."""
        if self.conversation is not None:
            return [{"role": role, "content": content} for role, content in self.conversation]
        messages = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": self.prompt})
        return messages


def _checked_conversation(config: StreamConfig) -> tuple[tuple[str, str], ...]:
    """The conversation as ``(role, content)`` pairs, or ``ConfigError`` saying what is wrong."""
    where = f"section {config.section_name!r}"
    if config.prompt or config.system_prompt is not None:
        raise ConfigError(f"{where}: give either prompt/system_prompt or conversation, not both")
    raw = config.conversation
    if isinstance(raw, str | bytes | Mapping) or not isinstance(raw, Sequence):
        raise ConfigError(f"{where}: conversation must be a list of messages")
    if not raw:
        raise ConfigError(f"{where}: conversation must hold at least one message")
    if len(raw) > MAX_CONVERSATION_MESSAGES:
        raise ConfigError(
            f"{where}: conversation has {len(raw)} messages; the maximum is "
            f"{MAX_CONVERSATION_MESSAGES}"
        )
    pairs: list[tuple[str, str]] = []
    total = 0
    for index, message in enumerate(raw):
        if isinstance(message, tuple) and len(message) == 2:
            role, content = message
        elif isinstance(message, Mapping) and set(message) == {"role", "content"}:
            role, content = message["role"], message["content"]
        else:
            raise ConfigError(
                f"{where}: conversation[{index}] must be an object with exactly 'role' and "
                "'content'"
            )
        if role not in ROLES:
            raise ConfigError(
                f"{where}: conversation[{index}] role must be one of {', '.join(ROLES)}"
            )
        if not isinstance(content, str):
            raise ConfigError(f"{where}: conversation[{index}] content must be a string")
        total += len(content)
        pairs.append((role, content))
    if total > MAX_CONVERSATION_CHARS:
        raise ConfigError(
            f"{where}: conversation has {total} characters; the maximum is {MAX_CONVERSATION_CHARS}"
        )
    if not any(role == "user" and content.strip() for role, content in pairs):
        raise ConfigError(f"{where}: conversation needs a non-empty user message")
    return tuple(pairs)


def validate_configs(configs: Iterable[StreamConfig]) -> tuple[StreamConfig, ...]:
    """Check a run's sections as a whole: at least one, at most ``MAX_SECTIONS``, unique names."""
    checked = tuple(configs)
    if not checked:
        raise ConfigError("a run needs at least one StreamConfig")
    if len(checked) > MAX_SECTIONS:
        raise ConfigError(f"a run takes at most {MAX_SECTIONS} sections, got {len(checked)}")
    seen: set[str] = set()
    for config in checked:
        if not isinstance(config, StreamConfig):
            raise ConfigError(f"expected StreamConfig, got {type(config).__name__}")
        if config.section_name in seen:
            raise ConfigError(f"duplicate section name {config.section_name!r} in one run")
        seen.add(config.section_name)
    return checked


#: A flush interval longer than this would be felt as stutter rather than saved CPU.
_MAX_FLUSH_INTERVAL_S = 1.0


def _positive(name: str, value: float | None, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        allowed = "a positive number or None" if allow_none else "a positive number"
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How one run behaves: ordering, limits, timeouts and rate-limit handling."""

    mode: Mode = Mode.INTERLEAVED
    #: Sections running at once within this run (None: all of them).
    max_parallel: int | None = None
    #: Whole-run deadline: sections still open then end with a ``timeout`` error.
    deadline_s: float | None = 300.0
    #: A section that produces nothing for this long ends with a ``timeout`` error.
    stall_timeout_s: float | None = 30.0
    #: Emit an SSE comment when nothing else went out for this long (None: never).
    heartbeat_s: float | None = 15.0
    #: Events buffered between the workers and the consumer before workers wait.
    queue_size: int = 256
    #: How long a worker waits for room in a full queue before giving its section up.
    backpressure_timeout_s: float = 30.0
    #: Upper bound on any Retry-After wait.
    max_retry_wait_s: float = 30.0
    #: How many 429s in a row one section may take in the sequential fallback.
    max_rate_limit_retries: int = 2
    #: Ask the upstream for token usage (``stream_options.include_usage``).
    include_usage: bool = True
    #: While chunks come closer together than this (seconds), those arriving within it after
    #: a write of chunks wait and go out together in the next write (0: write each as soon as
    #: it comes). At a model's pace that saves a wake-up and a write per chunk, at the cost of
    #: up to this much delay per chunk (about half of it on average); the first chunk after a
    #: quiet spell, control events (section ends, errors, ``done``) and a full queue never wait.
    #: 40 ms: below what a reader notices in streamed text, longer than the gap between
    #: tokens of a 30 ms-per-token model, and short enough that a service still notices a
    #: client gone (at its second write after the disconnect) within 100 ms
    #: (docs/PERFORMANCE.md measures the choice).
    flush_interval_s: float = 0.04

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "mode", Mode(self.mode))
        except ValueError:
            allowed = ", ".join(m.value for m in Mode)
            raise ConfigError(f"mode must be one of {allowed}, got {self.mode!r}") from None
        if self.max_parallel is not None and (
            isinstance(self.max_parallel, bool)
            or not isinstance(self.max_parallel, int)
            or self.max_parallel < 1
        ):
            raise ConfigError(
                f"max_parallel must be a positive integer or None, got {self.max_parallel!r}"
            )
        _positive("deadline_s", self.deadline_s, allow_none=True)
        _positive("stall_timeout_s", self.stall_timeout_s, allow_none=True)
        _positive("heartbeat_s", self.heartbeat_s, allow_none=True)
        _positive("backpressure_timeout_s", self.backpressure_timeout_s)
        _positive("max_retry_wait_s", self.max_retry_wait_s)
        if (
            isinstance(self.flush_interval_s, bool)
            or not isinstance(self.flush_interval_s, int | float)
            or not 0 <= self.flush_interval_s <= _MAX_FLUSH_INTERVAL_S
        ):
            raise ConfigError(
                f"flush_interval_s must be a number from 0 to {_MAX_FLUSH_INTERVAL_S:g}, "
                f"got {self.flush_interval_s!r}"
            )
        if isinstance(self.queue_size, bool) or not isinstance(self.queue_size, int):
            raise ConfigError(f"queue_size must be an integer, got {self.queue_size!r}")
        if self.queue_size < 1:
            raise ConfigError(f"queue_size must be at least 1, got {self.queue_size}")
        if (
            isinstance(self.max_rate_limit_retries, bool)
            or not isinstance(self.max_rate_limit_retries, int)
            or self.max_rate_limit_retries < 0
        ):
            raise ConfigError(
                "max_rate_limit_retries must be a non-negative integer, "
                f"got {self.max_rate_limit_retries!r}"
            )


@dataclass(frozen=True, kw_only=True)
class Preset:
    """A named model/temperature/length choice for a kind of task."""

    model: str
    temperature: float
    max_tokens: int


Complexity = Literal["simple", "medium", "complex"]

#: The presets ``optimize_stream_config`` chooses from (README); model names can be overridden
#: per preset by environment.
PRESETS: Mapping[str, Preset] = {
    "simple": Preset(model="gpt-4o-mini", temperature=0.5, max_tokens=300),
    "medium": Preset(model="gpt-4o", temperature=0.7, max_tokens=500),
    "complex": Preset(model="gpt-4o", temperature=0.8, max_tokens=800),
}


#: ``BACKEND_AI_MODEL_SIMPLE`` / ``_MEDIUM`` / ``_COMPLEX``: the model of each preset, when set.
PRESET_MODEL_VARIABLES: Mapping[str, Variable] = {
    name: Variable(f"BACKEND_AI_MODEL_{name.upper()}", name) for name in PRESETS
}


def preset_model(complexity: str, environ: Mapping[str, str] | None = None) -> str:
    """The model for a preset: ``BACKEND_AI_MODEL_<COMPLEXITY>`` when set, else the default."""
    return environment.value(PRESET_MODEL_VARIABLES[complexity], PRESETS[complexity].model, environ)


def optimize_stream_config(
    section_name: str,
    prompt: str,
    complexity: Complexity | str = "medium",
    *,
    system_prompt: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> StreamConfig:
    """A ``StreamConfig`` from the preset named ``complexity`` (``PRESETS``): its model (or
    ``BACKEND_AI_MODEL_<COMPLEXITY>``), temperature and ``max_tokens``.

    Nothing is measured or tuned: the function looks the preset up and fills it in. The name
    is kept because it is the public API code written against this engine already calls.
    """
    if complexity not in PRESETS:
        allowed = ", ".join(PRESETS)
        raise ConfigError(f"complexity must be one of {allowed}, got {complexity!r}")
    preset = PRESETS[complexity]
    return StreamConfig(
        section_name,
        prompt,
        model=preset_model(complexity, environ),
        temperature=preset.temperature,
        max_tokens=preset.max_tokens,
        system_prompt=system_prompt,
    )


def section_names(configs: Sequence[StreamConfig]) -> tuple[str, ...]:
    return tuple(c.section_name for c in configs)
