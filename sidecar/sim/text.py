"""Deterministic prose of an exact token length, and the dice that make every choice reproducible.

`Dice` draws from a BLAKE2b hash of a key and a label, so the same request (same key) always makes the same
choices, and unrelated choices (different labels) are independent. `prose(n, ...)` returns text that the
simulator's tokenizer counts as exactly `n` tokens.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TypeVar

from sidecar.sim.tokens import pieces

T = TypeVar("T")

# Each word, with its leading space, is one token for `tokens.pieces` (letters only, at most 7 of them).
_VOCABULARY = (
    "the code path test module input value result change check looks right next case error assert return call "
    "caller line file read first then this that should handle empty list number string branch logic fix update "
    "helper expect output before after edge loop index so we can see where it fails and what suite runs now also "
    "keep small clear simple"
)
_WORDS = tuple(_VOCABULARY.split())


class Dice:
    """Reproducible randomness keyed by a request: `uniform(label)` in [0, 1), `choice(label, items)`."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _digest(self, label: str) -> bytes:
        return hashlib.blake2b(self._key + b"\x00" + label.encode(), digest_size=16).digest()

    def uniform(self, label: str) -> float:
        return int.from_bytes(self._digest(label)[:8], "big") / 2**64

    def choice(self, label: str, items: Sequence[T]) -> T:
        return items[int(self.uniform(label) * len(items))]

    def hex(self, label: str, length: int = 32) -> str:
        return hashlib.blake2b(self._key + b"\x01" + label.encode(), digest_size=(length + 1) // 2).hexdigest()[:length]


def prose(n: int, dice: Dice, intro: str = "") -> str:
    """`intro` (cut to `n` tokens) followed by generated sentences, `n` tokens in all."""
    if n <= 0:
        return ""
    out = pieces(intro)[:n]
    sentence = 0
    while len(out) < n:
        remaining = n - len(out)
        length = 6 + int(dice.uniform(f"len{sentence}") * 10)
        words = [dice.choice(f"w{sentence}.{i}", _WORDS) for i in range(min(length, remaining))]
        first = words[0].capitalize()
        out.append(first if not out else " " + first)
        out.extend(" " + w for w in words[1:])
        if len(out) < n:
            out.append(".")
        sentence += 1
    return "".join(out[:n])
