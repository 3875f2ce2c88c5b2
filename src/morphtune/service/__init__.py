"""gRPC service ``morphtune.v1`` over the results store: servicer, interceptors, server, client.

Never imports torch or ray. Regenerate the protocol code with
``python -m morphtune.service.codegen``.
"""

from morphtune.service._interceptors import MetricsInterceptor
from morphtune.service._server import DEFAULT_METRICS_PORT, DEFAULT_PORT, make_server, serve
from morphtune.service._servicer import SERVICE_NAME, SweepServicer, status_for
from morphtune.service.client import SweepClient

__all__ = [
    "DEFAULT_METRICS_PORT",
    "DEFAULT_PORT",
    "SERVICE_NAME",
    "MetricsInterceptor",
    "SweepClient",
    "SweepServicer",
    "make_server",
    "serve",
    "status_for",
]
