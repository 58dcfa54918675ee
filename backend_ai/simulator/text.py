"""Deterministic, readable completion text.

The same request always yields the same tokens (the seed is derived from the request body
without the keys that only change *how* it is delivered), so tests can check that every token
arrived exactly once and in order, and a streamed answer equals the non-streamed one. A
``max_tokens`` cap yields a prefix of the uncapped text for the same reason.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping
from typing import Any

__all__ = ["completion_tokens", "count_prompt_tokens", "derive_seed"]

# Keys that change delivery, not content: excluded from the default seed.
_DELIVERY_KEYS = frozenset(
    {"sim", "stream", "stream_options", "max_tokens", "max_completion_tokens", "user"}
)

_SENTENCES = (
    "The first thing to notice is how the pieces fit together.",
    "Each part of the answer arrives as soon as it is ready, one word at a time.",
    "A dream about water often points to feelings that have not yet been named.",
    "The moving line suggests patience rather than a sudden change of course.",
    "In the tarot, the card in the middle position describes the present moment.",
    "Small steps taken every day add up to a noticeable change over a season.",
    "There is no single right reading, only the one that helps you decide well.",
    "Consider what you already know before looking for something new.",
    "The house in the dream may stand for the self and its many rooms.",
    "When the wind moves over the lake, the surface shows what is hidden below.",
    "A closed door is not always a refusal; sometimes it is only a pause.",
    "The symbols repeat because the question has not been fully asked yet.",
    "Try to write down three details you remember before they fade.",
    "Old patterns tend to return when we are tired or in a hurry.",
    "The second hexagram speaks of receptive strength and steady work.",
    "Friends who appear in dreams often carry qualities we want to grow.",
    "Look at the timing as well as the content of what is happening.",
    "A clear plan for the next week is worth more than a vague plan for the year.",
    "The reversed card softens its meaning instead of turning it upside down.",
    "Rest is part of the work, not a break from it.",
    "Questions asked in a calm moment tend to get clearer answers.",
    "The path in the dream was narrow, but it kept going forward.",
    "Notice which feeling stays with you after you wake up.",
    "Balance comes from small corrections, made often and without drama.",
    "The mountain stands still, and that stillness is its own kind of answer.",
    "What looks like an ending in one section is a beginning in the next.",
    "Keep the summary short and let the details speak for themselves.",
    "It helps to name one concrete action you can take today.",
)


def derive_seed(body: Mapping[str, Any]) -> int:
    """A stable 64-bit seed from the request's content (model, messages, temperature, ...)."""
    content = {key: value for key, value in body.items() if key not in _DELIVERY_KEYS}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return int.from_bytes(hashlib.sha256(canonical.encode()).digest()[:8], "big")


def completion_tokens(seed: int, count: int) -> list[str]:
    """``count`` tokens of English sentences; joined, they read as plain text.

    Tokens are words carrying their leading space and trailing punctuation, like BPE tokens.
    """
    rng = random.Random(seed)
    tokens: list[str] = []
    previous = -1
    while len(tokens) < count:
        index = rng.randrange(len(_SENTENCES))
        if index == previous:
            index = (index + 1) % len(_SENTENCES)
        previous = index
        for word in _SENTENCES[index].split(" "):
            tokens.append(word if not tokens else " " + word)
            if len(tokens) == count:
                break
    return tokens


def count_prompt_tokens(messages: Any) -> int:
    """A rough prompt-token count (words plus per-message overhead), enough for usage fields."""
    total = 3
    if not isinstance(messages, list):
        return total
    for message in messages:
        total += 4
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, str):
            total += len(content.split())
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                    total += len(part["text"].split())
    return total
