"""Every prompt of the service, as templates, plus the small domain data they draw on.

Routes never build prompt strings themselves: they pick a reading here and fill it in, so the
wording of the whole product can be reviewed (and changed) in this one file. Each section names
the preset (``simple``/``medium``/``complex``) that sizes its model, temperature and length.

Templates use ``string.Template``: the user's text is substituted once and never re-parsed, so
braces or dollar signs in it are harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from string import Template

__all__ = [
    "COMPARE_SECTION",
    "DREAM_SECTIONS",
    "HEXAGRAMS",
    "ICHING_SECTIONS",
    "TAROT_DECK",
    "TAROT_SECTION",
    "TAROT_SPREADS",
    "SectionPrompt",
]


@dataclass(frozen=True)
class SectionPrompt:
    """One section of a reading: its name, its preset and its two messages."""

    section: str
    complexity: str
    system: str
    user: Template

    def render(self, **values: str) -> str:
        """The user message with ``values`` filled in; a missing value is a bug (KeyError)."""
        return self.user.substitute(values)


_READER = (
    "You are a thoughtful, grounded guide. Write in plain, warm language, in short paragraphs, "
    "without headings. Never claim certainty about the future."
)

DREAM_SECTIONS: tuple[SectionPrompt, ...] = (
    SectionPrompt(
        "summary",
        "simple",
        _READER,
        Template(
            "Summarise this dream in three or four sentences, naming its mood and its central "
            "situation.\n\nDream:\n$dream"
        ),
    ),
    SectionPrompt(
        "symbols",
        "medium",
        _READER,
        Template(
            "List the main symbols of this dream (people, places, objects, actions) and what "
            "each commonly stands for, one short paragraph per symbol.\n\nDream:\n$dream"
        ),
    ),
    SectionPrompt(
        "recommendations",
        "simple",
        _READER,
        Template(
            "Suggest three gentle, practical things the dreamer could reflect on or do in "
            "waking life after this dream.\n\nDream:\n$dream"
        ),
    ),
)

#: The 64 hexagrams in King Wen order (index 0 is hexagram 1).
HEXAGRAMS: tuple[str, ...] = (
    "The Creative", "The Receptive", "Difficulty at the Beginning", "Youthful Folly",
    "Waiting", "Conflict", "The Army", "Holding Together", "Small Taming", "Treading",
    "Peace", "Standstill", "Fellowship", "Great Possession", "Modesty", "Enthusiasm",
    "Following", "Work on the Decayed", "Approach", "Contemplation", "Biting Through",
    "Grace", "Splitting Apart", "Return", "Innocence", "Great Taming", "Nourishment",
    "Great Exceeding", "The Abysmal", "The Clinging", "Influence", "Duration", "Retreat",
    "Great Power", "Progress", "Darkening of the Light", "The Family", "Opposition",
    "Obstruction", "Deliverance", "Decrease", "Increase", "Breakthrough", "Coming to Meet",
    "Gathering Together", "Pushing Upward", "Oppression", "The Well", "Revolution",
    "The Cauldron", "The Arousing", "Keeping Still", "Development", "The Marrying Maiden",
    "Abundance", "The Wanderer", "The Gentle", "The Joyous", "Dispersion", "Limitation",
    "Inner Truth", "Small Exceeding", "After Completion", "Before Completion",
)  # fmt: skip

ICHING_SECTIONS: tuple[SectionPrompt, ...] = (
    SectionPrompt(
        "hexagram",
        "simple",
        _READER,
        Template(
            'Describe I Ching hexagram $number, "$name": its image, its trigrams and its '
            "traditional judgement, in a short paragraph."
        ),
    ),
    SectionPrompt(
        "interpretation",
        "medium",
        _READER,
        Template(
            "The question was: $question\n\nThe I Ching answered with hexagram $number, "
            '"$name". Interpret what the hexagram says about this question.'
        ),
    ),
    SectionPrompt(
        "guidance",
        "simple",
        _READER,
        Template(
            'The question was: $question\n\nThe answer was hexagram $number, "$name". Offer '
            "two or three concrete pieces of guidance in the spirit of this hexagram."
        ),
    ),
)

_MAJOR_ARCANA = (
    "The Fool", "The Magician", "The High Priestess", "The Empress", "The Emperor",
    "The Hierophant", "The Lovers", "The Chariot", "Strength", "The Hermit",
    "Wheel of Fortune", "Justice", "The Hanged Man", "Death", "Temperance", "The Devil",
    "The Tower", "The Star", "The Moon", "The Sun", "Judgement", "The World",
)  # fmt: skip
_RANKS = (
    "Ace", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten",
    "Page", "Knight", "Queen", "King",
)  # fmt: skip
_SUITS = ("Wands", "Cups", "Swords", "Pentacles")

#: The 78 cards of a Rider-Waite-Smith deck.
TAROT_DECK: tuple[str, ...] = _MAJOR_ARCANA + tuple(
    f"{rank} of {suit}" for suit in _SUITS for rank in _RANKS
)

#: Spread name (as in ``/tarot/<spread>-stream``) -> the position of each card drawn.
TAROT_SPREADS: dict[str, tuple[str, ...]] = {
    "single-card": ("The heart of the matter",),
    "three-card": ("Past", "Present", "Future"),
    "situation-action-outcome": ("Situation", "Action", "Outcome"),
    "celtic-cross": (
        "Present", "Challenge", "Foundation", "Recent past", "Possible outcome",
        "Near future", "Self", "Environment", "Hopes and fears", "Outcome",
    ),
}  # fmt: skip

TAROT_SECTION = SectionPrompt(
    "reading",
    "complex",
    _READER,
    Template(
        'Give a tarot reading for the question below. The spread is "$spread"; the cards '
        "drawn, by position, are:\n$cards\n\nRead each card in its position, then tie them "
        "together in a closing paragraph.\n\nQuestion: $question"
    ),
)

#: Compare sends the user's prompt unchanged to every model; one section per model.
COMPARE_SECTION = SectionPrompt(
    "compare",
    "medium",
    "Answer the user's request directly and concisely.",
    Template("$prompt"),
)
