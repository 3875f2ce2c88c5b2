"""gRPC service ``morphtune.v1`` over the results store: servicer, interceptors, server, client.

Never imports torch or ray. Regenerate the protocol code with
``python -m morphtune.service.codegen``.
"""

from morphtune.service._auth import TOKENS_ENV, AuthInterceptor, TokenSet
from morphtune.service._interceptors import MetricsInterceptor
from morphtune.service._limits import (
    DEFAULT_MAX_MESSAGE_BYTES,
    ConcurrencyLimiter,
    ConcurrencyLimitInterceptor,
)
from morphtune.service._server import (
    DEFAULT_MAX_CONCURRENT,
    DEFAULT_METRICS_PORT,
    DEFAULT_PORT,
    BuiltServer,
    build_server,
    make_server,
    serve,
)
from morphtune.service._servicer import SERVICE_NAME, SweepServicer, status_for
from morphtune.service._tls import TlsConfig
from morphtune.service.client import SweepClient

__all__ = [
    "DEFAULT_MAX_CONCURRENT",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_METRICS_PORT",
    "DEFAULT_PORT",
    "SERVICE_NAME",
    "TOKENS_ENV",
    "AuthInterceptor",
    "BuiltServer",
    "ConcurrencyLimitInterceptor",
    "ConcurrencyLimiter",
    "MetricsInterceptor",
    "SweepClient",
    "SweepServicer",
    "TlsConfig",
    "TokenSet",
    "build_server",
    "make_server",
    "serve",
    "status_for",
]
