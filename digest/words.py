"""Counted nouns for messages people read: "1 digest", "3 digests"."""

from __future__ import annotations


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """`count` and the noun in the number it takes: plural(1, "digest") is "1 digest"."""
    return f"{count} {noun if count == 1 else (nouns or noun + 's')}"
