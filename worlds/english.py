"""The bits of English grammar the generated conversations need."""

from __future__ import annotations


def article(noun_phrase: str) -> str:
    """"a" or "an" for the phrase's first word (by its first letter, enough for these worlds)."""
    return "an" if noun_phrase[:1].lower() in "aeiou" else "a"
