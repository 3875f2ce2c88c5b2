"""``python -m morphtune.service``: run the service in the foreground (the CLI's ``morphtune
serve`` is the usual entry point; both take the same flags, see docs/service.md)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from morphtune._serve_cli import add_serve_arguments, run_serve
from morphtune.store import DEFAULT_ROOT


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m morphtune.service", description=__doc__)
    parser.add_argument("--store", default=DEFAULT_ROOT, help="results store root")
    add_serve_arguments(parser)
    arguments = parser.parse_args(argv)
    return run_serve(arguments, arguments.store)


if __name__ == "__main__":
    raise SystemExit(main())
