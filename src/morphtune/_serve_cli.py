"""Command-line flags of ``morphtune serve`` and ``python -m morphtune.service``, shared.

Imports only argparse at module level (the CLI parser is built for every command); gRPC is
imported when the server actually starts.
"""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["add_serve_arguments", "run_serve"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Every serve flag except the store root (``--store`` / ``--results``)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=50051, help="gRPC port (0: any free port)")
    parser.add_argument(
        "--metrics-port", type=int, default=9464, help="Prometheus /metrics port (-1: off)"
    )
    security = parser.add_argument_group("security (see docs/service.md)")
    security.add_argument(
        "--token-file",
        help="bearer tokens, one per line ('<token> [expires=<ISO 8601>]', # comments); "
        "also read: $MORPHTUNE_TOKENS (comma-separated). None configured: auth off",
    )
    security.add_argument("--tls-cert", help="server certificate chain, PEM (enables TLS)")
    security.add_argument("--tls-key", help="server private key, PEM (with --tls-cert)")
    security.add_argument(
        "--tls-client-ca", help="CA certificate(s), PEM: require client certificates (mTLS)"
    )
    limits = parser.add_argument_group("limits")
    limits.add_argument(
        "--max-message-bytes",
        type=_positive_int,
        default=4 * 1024 * 1024,
        help="largest request or response message (default 4 MiB)",
    )
    limits.add_argument(
        "--max-concurrent",
        type=_positive_int,
        default=64,
        help="calls served at once; more answer RESOURCE_EXHAUSTED (0: no cap; default 64)",
    )
    limits.add_argument(
        "--grace",
        type=float,
        default=5.0,
        help="seconds calls in flight get to finish after SIGTERM (default 5)",
    )
    parser.add_argument(
        "--ray-address",
        help="Ray dashboard address for SubmitSweep/CancelSweep, e.g. http://127.0.0.1:8265",
    )


def _check(args: argparse.Namespace) -> str | None:
    if (args.tls_cert is None) != (args.tls_key is None):
        return "--tls-cert and --tls-key go together"
    if args.tls_client_ca is not None and args.tls_cert is None:
        return "--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key"
    if not args.grace >= 0:
        return f"--grace must be >= 0 seconds, got {args.grace}"
    return None


def run_serve(args: argparse.Namespace, store_root: str) -> int:
    """Serve with the parsed flags until SIGTERM/SIGINT; the process exit status."""
    problem = _check(args)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from morphtune.service import TlsConfig, serve

    tls = None
    if args.tls_cert is not None:
        tls = TlsConfig(args.tls_cert, args.tls_key, args.tls_client_ca)
    try:
        serve(
            store_root,
            args.host,
            args.port,
            None if args.metrics_port < 0 else args.metrics_port,
            grace=args.grace,
            token_file=args.token_file,
            tls=tls,
            max_message_bytes=args.max_message_bytes,
            max_concurrent=args.max_concurrent or None,
            ray_address=args.ray_address,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
