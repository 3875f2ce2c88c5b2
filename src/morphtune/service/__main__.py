"""``python -m morphtune.service``: run the service in the foreground (the CLI's ``morphtune
serve`` is the usual entry point)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from morphtune.service._server import DEFAULT_METRICS_PORT, DEFAULT_PORT, serve
from morphtune.store import DEFAULT_ROOT


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m morphtune.service", description=__doc__)
    parser.add_argument("--store", default=DEFAULT_ROOT, help="results store root directory")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="gRPC port (0: any)")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=DEFAULT_METRICS_PORT,
        help="Prometheus /metrics port (0: any, -1: off)",
    )
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    metrics_port = None if arguments.metrics_port < 0 else arguments.metrics_port
    serve(arguments.store, arguments.host, arguments.port, metrics_port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
