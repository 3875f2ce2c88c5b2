"""Markdown building blocks shared by the reference generators and the docs tests."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

__all__ = [
    "HeadingSlugger",
    "docstring_markdown",
    "escape_tags",
    "first_sentence",
    "heading_anchors",
    "slugify",
    "table",
]

_INLINE_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_SLUG_DROP = re.compile(r"[^\w\- ]", re.UNICODE)
_RST_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_RST_LITERAL = re.compile(r"``([^`]+)``")
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^(```|~~~)")


def slugify(heading: str) -> str:
    """The anchor GitHub gives a heading (before de-duplication): the rendered text,
    lower-cased, punctuation other than ``-`` and ``_`` dropped, spaces made hyphens."""
    text = _INLINE_LINK.sub(r"\1", heading)
    text = text.replace("`", "").replace("*", "")
    text = _SLUG_DROP.sub("", text.strip().lower())
    return text.replace(" ", "-")


class HeadingSlugger:
    """Anchors of a document's headings in order, de-duplicated as GitHub does
    (``name``, ``name-1``, ``name-2``, ...)."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def peek(self, heading: str) -> str:
        """The anchor :meth:`anchor` would give ``heading`` next, without counting it."""
        base = slugify(heading)
        count = self._seen.get(base, 0)
        return base if count == 0 else f"{base}-{count}"

    def anchor(self, heading: str) -> str:
        """The anchor of the next heading ``heading``, counted."""
        found = self.peek(heading)
        base = slugify(heading)
        self._seen[base] = self._seen.get(base, 0) + 1
        return found


def heading_anchors(markdown: str) -> set[str]:
    """Every heading anchor of a Markdown document (headings inside code fences skipped)."""
    slugger = HeadingSlugger()
    anchors = set()
    in_fence = False
    for line in markdown.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        match = None if in_fence else _HEADING.match(line)
        if match:
            anchors.add(slugger.anchor(match.group(2)))
    return anchors


_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")


def escape_tags(text: str) -> str:
    """``text`` with every ``<`` that could open an HTML tag escaped, outside code spans
    (GitHub would otherwise drop ``<name>`` as an unknown tag)."""
    parts = text.split("`")
    for index in range(0, len(parts), 2):  # even parts lie outside code spans
        parts[index] = _TAG_START.sub("&lt;", parts[index])
    return "`".join(parts)


def _cell(text: str) -> str:
    return text.replace("\n", " ").replace("|", "\\|").strip()


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A GitHub table: one line per row, ``|`` in cells escaped, newlines flattened."""
    lines = [
        "| " + " | ".join(_cell(h) for h in headers) + " |",
        "|" + "---|" * len(headers),
    ]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"a row has {len(row)} cells for {len(headers)} headers: {row!r}")
        lines.append("| " + " | ".join(_cell(cell) for cell in row) + " |")
    return lines


def docstring_markdown(text: str | None) -> list[str]:
    """A docstring as Markdown paragraphs: reST literals and roles become code spans and
    each paragraph's lines are joined into one."""
    if not text:
        return []
    converted = _RST_LITERAL.sub(r"`\1`", _RST_ROLE.sub(r"`\1`", text))
    paragraphs = re.split(r"\n\s*\n", converted.strip())
    return [
        escape_tags(" ".join(line.strip() for line in p.splitlines() if line.strip()))
        for p in paragraphs
    ]


def first_sentence(text: str | None) -> str:
    """The first sentence of a docstring's first paragraph, as Markdown ('' if none)."""
    paragraphs = docstring_markdown(text)
    if not paragraphs:
        return ""
    first = paragraphs[0]
    # A sentence ends at ". " followed by a capital or a code span; "e.g. x" does not.
    match = re.search(r"(?<!e\.g)(?<!i\.e)\.\s+(?=[A-Z`(])", first)
    return first[: match.start() + 1] if match else first
