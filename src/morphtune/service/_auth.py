"""Bearer-token authentication: the token set and the server interceptor that enforces it.

Clients send the metadata ``authorization: Bearer <token>``. Tokens come from a file (one
per line, ``#`` comments, optionally ``<token> expires=<ISO 8601 with timezone>``) and/or the
environment variable ``MORPHTUNE_TOKENS`` (comma-separated, same entry syntax).

Only SHA-256 digests of the tokens are kept in memory, and a presented token is compared
with every configured digest by :func:`hmac.compare_digest` (no early exit), so neither the
comparison time nor a log line or ``repr`` reveals a token. Failures answer
``UNAUTHENTICATED`` with a reason that never contains what the client sent.

``grpc.health.v1.Health`` is exempt (load balancers and Kubernetes probes carry no token).
Server reflection is **not** exempt: with auth on, the API description is for token holders
(``grpcurl -H "authorization: Bearer $TOKEN" host:port list``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

__all__ = [
    "AUTH_EXEMPT_PREFIXES",
    "TOKENS_ENV",
    "AuthInterceptor",
    "Token",
    "TokenSet",
    "parse_token_entry",
]

TOKENS_ENV = "MORPHTUNE_TOKENS"
AUTH_EXEMPT_PREFIXES: tuple[str, ...] = ("/grpc.health.v1.Health/",)
MIN_TOKEN_LENGTH = 16
_LOGGER = logging.getLogger(__name__)
# RFC 6750 b64token: what may follow "Bearer " in an Authorization header.
_TOKEN_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_GENERATE_HINT = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class Token:
    """A configured token: its SHA-256 digest (never the text), expiry and where it came from."""

    digest: bytes
    expires: float | None
    source: str

    def __repr__(self) -> str:  # the digest is harmless, but keep reprs short and boring
        return f"Token(source={self.source!r}, expires={self.expires!r})"


def _parse_expiry(value: str, source: str) -> float:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{source}: expires must be an ISO 8601 date-time such as "
            f"2030-01-01T00:00:00Z, got {value!r}"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"{source}: expires must carry a timezone (Z or +hh:mm), got {value!r}")
    return moment.timestamp()


def parse_token_entry(entry: str, source: str) -> Token:
    """One ``<token> [expires=<ISO 8601>]`` entry; errors name ``source``, never the token."""
    words = entry.split()
    if not words:
        raise ValueError(f"{source}: empty token entry")
    token, options = words[0], words[1:]
    if not _TOKEN_CHARACTERS.fullmatch(token):
        raise ValueError(
            f"{source}: a token may hold only letters, digits and -._~+/ (then '=' padding)"
        )
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(
            f"{source}: a token must be at least {MIN_TOKEN_LENGTH} characters, got "
            f"{len(token)} (generate one with {_GENERATE_HINT})"
        )
    expires = None
    for option in options:
        key, equals, value = option.partition("=")
        if key != "expires" or not equals:
            raise ValueError(
                f"{source}: unknown option {key!r} after the token (allowed: expires=<ISO 8601>)"
            )
        if expires is not None:
            raise ValueError(f"{source}: expires given twice")
        expires = _parse_expiry(value, source)
    return Token(_digest(token), expires, source)


def _file_entries(path: Path) -> list[Token]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"token file {os.fspath(path)!r} cannot be read: {error}") from None
    if os.name == "posix" and path.stat().st_mode & 0o077:
        _LOGGER.warning(
            "token file %s is readable by group or others; chmod 600 it", os.fspath(path)
        )
    tokens = []
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0].strip()
        if content:
            tokens.append(parse_token_entry(content, f"{os.fspath(path)}:{number}"))
    return tokens


def _env_entries(value: str) -> list[Token]:
    entries = [entry.strip() for entry in value.split(",")]
    return [
        parse_token_entry(entry, f"${TOKENS_ENV}[{index}]")
        for index, entry in enumerate(entries)
        if entry
    ]


class TokenSet:
    """The tokens a server accepts. Empty means authentication is off."""

    def __init__(self, tokens: Iterable[Token] = ()) -> None:
        unique: dict[bytes, Token] = {}
        for token in tokens:
            if token.digest in unique:
                raise ValueError(
                    f"{token.source}: duplicate token (same as {unique[token.digest].source})"
                )
            unique[token.digest] = token
        self._tokens = tuple(unique.values())

    @classmethod
    def from_strings(cls, tokens: Iterable[str], source: str = "tokens") -> TokenSet:
        """Tokens given in code, each a ``<token> [expires=...]`` entry."""
        if isinstance(tokens, str):
            raise TypeError("tokens must be a sequence of strings, not one string")
        return cls(
            parse_token_entry(token, f"{source}[{index}]") for index, token in enumerate(tokens)
        )

    @classmethod
    def load(
        cls,
        token_file: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> TokenSet:
        """Tokens from ``token_file`` (if given) plus ``$MORPHTUNE_TOKENS`` (if set)."""
        environ = os.environ if environ is None else environ
        tokens: list[Token] = []
        if token_file is not None:
            tokens.extend(_file_entries(Path(token_file)))
            if not tokens:
                raise ValueError(f"token file {os.fspath(token_file)!r} holds no token")
        tokens.extend(_env_entries(environ.get(TOKENS_ENV, "")))
        return cls(tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def __bool__(self) -> bool:
        return bool(self._tokens)

    def __repr__(self) -> str:
        return f"TokenSet({len(self._tokens)} tokens)"

    def verify(self, presented: str, now: float | None = None) -> str | None:
        """None when ``presented`` is a configured, unexpired token; else the reason."""
        digest = _digest(presented)
        match: Token | None = None
        for token in self._tokens:  # every digest is compared: no early exit
            if hmac.compare_digest(digest, token.digest):
                match = token
        if match is None:
            return "invalid bearer token"
        if match.expires is not None and (time.time() if now is None else now) >= match.expires:
            expired = datetime.fromtimestamp(match.expires, tz=UTC).isoformat()
            return f"bearer token expired at {expired}"
        return None


def bearer_failure(tokens: TokenSet, metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    """None when ``metadata`` carries one valid ``authorization: Bearer`` token, else why not.

    The reason never quotes the metadata value.
    """
    values = [value for key, value in metadata or () if key == "authorization"]
    if not values:
        return "missing 'authorization' metadata; send 'authorization: Bearer <token>'"
    if len(values) > 1:
        return "more than one 'authorization' metadata entry"
    value = values[0]
    if isinstance(value, bytes):
        return "'authorization' metadata must be text: 'Bearer <token>'"
    scheme, _, credentials = value.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials or " " in credentials:
        return "'authorization' metadata must be 'Bearer <token>' (other schemes are refused)"
    return tokens.verify(credentials)


def _denied(reason: str) -> Callable[[Any, grpc.ServicerContext], Any]:
    def deny(_request: Any, context: grpc.ServicerContext) -> Any:
        context.set_trailing_metadata((("www-authenticate", 'Bearer realm="morphtune"'),))
        context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

    return deny


def denying_handler(handler: grpc.RpcMethodHandler, reason: str) -> grpc.RpcMethodHandler:
    """A handler of ``handler``'s kind answering UNAUTHENTICATED, which never parses the
    request (an unauthenticated caller's bytes are not deserialized)."""
    deny = _denied(reason)
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny)
    return grpc.unary_unary_rpc_method_handler(deny)


class AuthInterceptor(grpc.ServerInterceptor):
    """Answers UNAUTHENTICATED unless the call carries a configured bearer token.

    Methods under :data:`AUTH_EXEMPT_PREFIXES` (the health service) pass unchecked.
    """

    def __init__(
        self, tokens: TokenSet, exempt_prefixes: Sequence[str] = AUTH_EXEMPT_PREFIXES
    ) -> None:
        if not tokens:
            raise ValueError("AuthInterceptor needs at least one token")
        self._tokens = tokens
        self._exempt = tuple(exempt_prefixes)
        # One denying handler per (method, handler kind, reason): the reasons are few.
        self._denials: dict[tuple[str, bool, bool, str], grpc.RpcMethodHandler] = {}

    @property
    def tokens(self) -> TokenSet:
        return self._tokens

    def replace_tokens(self, tokens: TokenSet) -> None:
        """Swap in a new token set (e.g. re-read on SIGHUP); calls after this use it."""
        if not tokens:
            raise ValueError("AuthInterceptor needs at least one token")
        self._tokens = tokens
        self._denials = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(self._exempt):
            return handler
        reason = bearer_failure(self._tokens, handler_call_details.invocation_metadata)
        if reason is None:
            return handler
        _LOGGER.info("unauthenticated call to %s refused: %s", method, reason)
        key = (method, handler.request_streaming, handler.response_streaming, reason)
        denial = self._denials.get(key)
        if denial is None:
            if len(self._denials) >= 1024:
                self._denials.clear()
            denial = self._denials[key] = denying_handler(handler, reason)
        return denial
