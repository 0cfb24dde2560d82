"""Cutting a document into passages for embedding: paragraph and sentence aware, each at most ``chunk_chars``
characters, consecutive passages sharing up to ``overlap`` characters (whole words), never an empty passage.

A paragraph (text between blank lines) that fits stays whole; a longer one is cut between sentences, a sentence
longer than a passage between words, and a word longer than a passage into slices. Pieces are then packed
greedily; each new passage starts with the end of the previous one. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_PARAGRAPHS = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")
PARAGRAPH = "\n\n"
SPACE = " "


def _pieces(text: str, limit: int) -> Iterator[tuple[str, str]]:
    """(joiner to the previous piece, piece): every piece non-empty and at most ``limit`` characters."""
    for paragraph in _PARAGRAPHS.split(text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        joiner = PARAGRAPH
        if len(paragraph) <= limit:
            yield joiner, paragraph
            continue
        for sentence in _SENTENCE_END.split(paragraph):
            sentence = sentence.strip()
            if not sentence:
                continue
            if len(sentence) <= limit:
                yield joiner, sentence
                joiner = SPACE
                continue
            for word in sentence.split():
                for start in range(0, len(word), limit):
                    yield joiner, word[start : start + limit]
                    joiner = "" if start + limit < len(word) else SPACE
                joiner = SPACE


def _tail(chunk: str, overlap: int) -> str:
    """The end of ``chunk``, at most ``overlap`` characters, starting at a word."""
    if overlap <= 0:
        return ""
    if len(chunk) <= overlap:
        return chunk
    start = len(chunk) - overlap
    if not chunk[start - 1].isspace():
        space = re.search(r"\s", chunk[start:])
        if space is None:
            return ""
        start += space.end()
    return chunk[start:].strip()


def _drop_first_word(text: str) -> str:
    parts = text.split(None, 1)
    return parts[1] if len(parts) == 2 else ""


def chunk_text(text: str, *, chunk_chars: int = 800, overlap: int = 100) -> list[str]:
    """``text`` as passages of at most ``chunk_chars`` characters ([] for blank text)."""
    if chunk_chars < 1 or not 0 <= overlap < chunk_chars:
        raise ValueError("chunk_chars must be >= 1 and 0 <= overlap < chunk_chars")
    chunks: list[str] = []
    current = ""
    for joiner, piece in _pieces(text, chunk_chars):
        if not current:
            current = piece
        elif len(current) + len(joiner) + len(piece) <= chunk_chars:
            current += joiner + piece
        else:
            chunks.append(current)
            tail = _tail(current, overlap)
            while tail and len(tail) + len(SPACE) + len(piece) > chunk_chars:
                tail = _drop_first_word(tail)
            current = f"{tail}{SPACE}{piece}" if tail else piece
    if current:
        chunks.append(current)
    return chunks
