"""The ``morphtune`` commands shown in a Markdown guide, and whether the real CLI parser
accepts them (shared by the guide tests: tutorial, concepts, operations)."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex

from morphtune import cli

#: A fenced code block: its language and body (``` or ~~~ fences).
FENCE = re.compile(r"^(```|~~~)(\w*)[^\n]*\n(.*?)^\1", re.MULTILINE | re.DOTALL)
_OPERATORS = set(";&|")


def code_blocks(markdown: str, languages: set[str]) -> list[str]:
    """Bodies of the fenced blocks in one of ``languages``."""
    return [body for _, language, body in FENCE.findall(markdown) if language in languages]


def morphtune_commands(markdown: str) -> list[list[str]]:
    """argv (after ``morphtune``) of each shell line running morphtune, up to the first
    shell operator (``&``, ``&&``, ``|``, ``;``); ``$VARIABLES`` filled with a dummy."""
    commands = []
    for body in code_blocks(markdown, {"bash", "sh"}):
        for line in body.replace("\\\n", " ").splitlines():
            if not line.strip().startswith("morphtune "):
                continue
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            lexer.commenters = "#"
            words = []
            for word in lexer:
                if word and set(word) <= _OPERATORS:
                    break
                words.append(re.sub(r"\$\w+", "X", word))
            commands.append(words[1:])
    return commands


def parse_problem(argv: list[str]) -> str | None:
    """None when the CLI parser accepts ``argv`` (``--help`` included), else its complaint."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            parsed = cli._parser().parse_args(argv)
    except SystemExit as exit_:
        if exit_.code == 0:
            return None
        lines = stderr.getvalue().strip().splitlines()
        return lines[-1] if lines else f"exit status {exit_.code}"
    return None if isinstance(parsed, argparse.Namespace) else "no namespace"
