"""Compositional utterances: templates with choices and slots, wrapped in openers and closers.

Template syntax, kept tiny so the phrase lists stay readable:

- `[a|b|c]` picks one option; an empty option makes the group optional (`[please |]`);
- `{slot}` is replaced by a filler from the lexicon's slots, which may themselves hold
  choices and slots (a tuple of strings) or be a function of the random generator
  (its result is used as is).

An utterance is `opener + core (+ extra) (+ product clause) + closer`, then styled for its
medium: voice reads like speech-to-text (lower case, no punctuation), chat and messages
are sometimes lower case, typo'd or without accents, email stays as written.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Filler = Sequence[str] | Callable[[np.random.Generator], str]

_CHOICE = re.compile(r"\[([^\[\]]*)\]")
_SLOT = re.compile(r"\{(\w+)\}")
_VOICE_PUNCTUATION = re.compile(r"(?<!\d)[.,]|[.,](?!\d)|[!?¿¡;:\"#]")  # keep 12.50

DEFAULT_PRODUCT = "Aurora X2"
"""The launched product that emerging intents talk about when no launch is scheduled."""


@dataclass(frozen=True)
class Lexicon:
    """Everything needed to write utterances in one language."""

    dialect: str
    openers: tuple[str, ...]
    closers: tuple[str, ...]
    extras: tuple[str, ...]
    """Context sentences that fit any intent ("it's kind of urgent")."""
    product_items: tuple[str, ...]
    """Replacements for `{item}` that name the launched product (`{name}`)."""
    product_clauses: tuple[str, ...]
    """Sentences that bring the launched product into intents without an `{item}`."""
    agent_lines: tuple[str, ...]
    slots: Mapping[str, Filler]
    intents: Mapping[str, tuple[str, ...]]
    contractions: tuple[tuple[str, str], ...] = ()
    """(pattern, replacement) pairs applied to the composed text ("de el" → "del")."""


def pick(options: Sequence[str], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def expand(template: str, rng: np.random.Generator, slots: Mapping[str, Filler]) -> str:
    """Resolve the choices, then the slots (recursively), of one template."""
    text = _choose(template, rng)

    def fill(match: re.Match[str]) -> str:
        filler = slots[match.group(1)]
        if callable(filler):
            return filler(rng)
        return expand(pick(filler, rng), rng, slots)

    return _SLOT.sub(fill, text)


def _choose(template: str, rng: np.random.Generator) -> str:
    return _CHOICE.sub(lambda m: pick(m.group(1).split("|"), rng), template)


def compose(
    lexicon: Lexicon,
    intent: str,
    rng: np.random.Generator,
    *,
    media_type: str,
    launch: str | None = None,
    mention_launch: bool = False,
    typo_rate: float = 0.0,
) -> str:
    """One customer utterance for `intent`.

    `launch` is the product on the market (emerging intents refer to it); with
    `mention_launch` the utterance names it, through `{item}` when the core sentence
    has one and through an extra clause when it does not already name it.
    """
    product = launch or DEFAULT_PRODUCT
    name: dict[str, Filler] = {"name": lambda _: product}
    slots: dict[str, Filler] = {**lexicon.slots, "launch": lambda _: product}
    core = _choose(pick(lexicon.intents[intent], rng), rng)
    product_clause = ""
    if mention_launch and "{launch}" not in core:
        if "{item}" in core:
            slots["item"] = lambda r: expand(pick(lexicon.product_items, r), r, name)
        else:
            product_clause = expand(pick(lexicon.product_clauses, rng), rng, name)
    sentences = [_upper_first(expand(core, rng, slots))]
    if rng.random() < 0.25:
        sentences.append(_upper_first(expand(pick(lexicon.extras, rng), rng, slots)))
    if product_clause:
        sentences.insert(int(rng.integers(1, len(sentences) + 1)), product_clause)
    opener = expand(pick(lexicon.openers, rng), rng, slots)
    if opener.endswith(","):
        sentences[0] = _lower_first(sentences[0])
    closer = expand(pick(lexicon.closers, rng), rng, slots)
    text = " ".join(part for part in (opener, *sentences, closer) if part)
    for pattern, replacement in lexicon.contractions:
        text = re.sub(pattern, replacement, text)
    return _style(text, rng, media_type=media_type, typo_rate=typo_rate, keep=product)


def _style(
    text: str, rng: np.random.Generator, *, media_type: str, typo_rate: float, keep: str
) -> str:
    if media_type == "voice":
        return " ".join(_VOICE_PUNCTUATION.sub("", text).lower().split())
    if media_type == "email":
        return text
    if rng.random() < typo_rate:
        text = _typo(text, rng, keep=keep)
    if rng.random() < 0.3:
        text = _strip_accents(text.replace("¿", "").replace("¡", ""))
    if rng.random() < 0.35:
        text = text.lower()
    if rng.random() < 0.25:
        text = text.rstrip(".!")
    return text


def _typo(text: str, rng: np.random.Generator, *, keep: str) -> str:
    """One slip of the finger in one lower-case word (never in the product name)."""
    protected = {w.lower() for w in keep.split()}
    words = text.split(" ")
    candidates = [
        i
        for i, w in enumerate(words)
        if len(w) >= 4 and w.isalpha() and w.islower() and w not in protected
    ]
    if not candidates:
        return text
    i = candidates[int(rng.integers(len(candidates)))]
    word, j = words[i], int(rng.integers(1, len(words[i]) - 1))
    kind = int(rng.integers(3))
    if kind == 0:  # swapped letters
        word = word[: j - 1] + word[j] + word[j - 1] + word[j + 1 :]
    elif kind == 1:  # dropped letter
        word = word[:j] + word[j + 1 :]
    else:  # doubled letter
        word = word[:j] + word[j] + word[j:]
    words[i] = word
    return " ".join(words)


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if c != "\u0301"))


def _first_letter(text: str) -> int | None:
    return next((i for i, c in enumerate(text) if c.isalpha()), None)


def _upper_first(text: str) -> str:
    i = _first_letter(text)
    return text if i is None else text[:i] + text[i].upper() + text[i + 1 :]


def _lower_first(text: str) -> str:
    """Lower-case the first letter after an opener such as "Hi," (but keep "I" and "I'm")."""
    i = _first_letter(text)
    if i is None or re.match(r"I\b", text[i:]):
        return text
    return text[:i] + text[i].lower() + text[i + 1 :]
