"""T8/T9: bearer-token auth (missing, wrong, wrong-scheme, expired -> UNAUTHENTICATED; tokens
never logged) and TLS / mutual TLS (plaintext, no client certificate and a certificate from
another CA refused), against real servers on loopback."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from prometheus_client import CollectorRegistry

from morphtune.cli import main as cli_main
from morphtune.service import SERVICE_NAME, TlsConfig, TokenSet, build_server
from morphtune.service.v1 import morphtune_pb2, morphtune_pb2_grpc
from tests.service.pki import Pki, make_pki
from tests.service.processes import server_process
from tests.service.servers import running_server
from tests.store.sweeps import SWEEP

GOOD = "good-token-0123456789abcdef"
OTHER_GOOD = "second-token-ABCDEFGHIJ-._~+/=="
ENV_TOKEN = "env-token-zyxwvutsrqponmlk"
EXPIRED = "expired-token-00000000000000"
WRONG = "wrong-token-0123456789abcdef"
TOKEN_FILE = f"""# morphtune bearer tokens
{GOOD}

{OTHER_GOOD}   # the CI runner
{EXPIRED} expires=2001-02-03T04:05:06Z
"""
SECRETS = (GOOD, OTHER_GOOD, ENV_TOKEN, EXPIRED, WRONG)
GET_SWEEP = morphtune_pb2.GetSweepRequest(sweep_id=SWEEP)


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "tokens.txt"
    path.write_text(TOKEN_FILE)
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def auth_server(store_root: Path, token_file: Path) -> Iterator[tuple[str, CollectorRegistry]]:
    tokens = TokenSet.load(token_file, environ={"MORPHTUNE_TOKENS": f" {ENV_TOKEN} ,"})
    registry = CollectorRegistry()
    options = {"tokens": tokens, "metrics_registry": registry}
    with running_server(store_root, **options) as server:
        yield server.target, registry


@pytest.fixture(scope="module")
def auth_target(auth_server: tuple[str, CollectorRegistry]) -> str:
    return auth_server[0]


@pytest.fixture(scope="module")
def registry(auth_server: tuple[str, CollectorRegistry]) -> CollectorRegistry:
    return auth_server[1]


@pytest.fixture
def stub(auth_target: str) -> Iterator[morphtune_pb2_grpc.SweepServiceStub]:
    with grpc.insecure_channel(auth_target) as channel:
        yield morphtune_pb2_grpc.SweepServiceStub(channel)


# -- token sources --------------------------------------------------------------------------


def test_token_file_and_environment(token_file: Path) -> None:
    tokens = TokenSet.load(token_file, environ={"MORPHTUNE_TOKENS": f"{ENV_TOKEN}, "})
    assert len(tokens) == 4
    assert tokens.verify(GOOD) is None and tokens.verify(ENV_TOKEN) is None
    assert tokens.verify(OTHER_GOOD) is None
    assert tokens.verify(WRONG) == "invalid bearer token"
    assert "expired at 2001-02-03T04:05:06+00:00" in str(tokens.verify(EXPIRED))
    assert not any(secret in repr(tokens) + repr(tokens._tokens) for secret in SECRETS)
    assert not TokenSet.load(None, environ={})  # nothing configured: auth off


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("short-token", "tokens.txt:1: a token must be at least 16 characters, got 11"),
        (f"{GOOD}\n{GOOD}", "tokens.txt:2: duplicate token (same as "),
        ("good-token-0123456789abcd\u00e9f", "may hold only letters, digits"),
        (f"{GOOD} expires=yesterday", "tokens.txt:1: expires must be an ISO 8601 date-time"),
        (f"{GOOD} expires=2030-01-01T00:00:00", "expires must carry a timezone"),
        (f"{GOOD} scope=read", "unknown option 'scope'"),
        ("# only a comment\n\n", "holds no token"),
    ],
)
def test_bad_token_file_is_refused_without_echoing_it(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text(content)
    with pytest.raises(ValueError) as info:
        TokenSet.load(path, environ={})
    assert message in str(info.value)
    assert GOOD not in str(info.value) and "short-token" not in str(info.value)


def test_tokens_in_code_and_env_errors() -> None:
    assert TokenSet.from_strings([GOOD, f"{ENV_TOKEN} expires=2999-01-01T00:00:00+02:00"])
    with pytest.raises(TypeError, match="not one string"):
        TokenSet.from_strings(GOOD)
    with pytest.raises(ValueError, match=r"\$MORPHTUNE_TOKENS\[1\]: a token must be at least"):
        TokenSet.load(None, environ={"MORPHTUNE_TOKENS": f"{GOOD},tiny"})


# -- T8: refusals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ((), "missing 'authorization' metadata"),
        (_bearer(WRONG), "invalid bearer token"),
        (_bearer(EXPIRED), "bearer token expired at 2001-02-03T04:05:06+00:00"),
        ((("authorization", "Basic Z29vZC10b2tlbg=="),), "must be 'Bearer <token>'"),
        ((("authorization", f"Token {GOOD}"),), "must be 'Bearer <token>'"),
        ((("authorization", "bearer"),), "must be 'Bearer <token>'"),
        ((("authorization", "Bearer "),), "must be 'Bearer <token>'"),
        ((("authorization", GOOD),), "must be 'Bearer <token>'"),
        ((("authorization", f"Bearer {GOOD} {GOOD}"),), "must be 'Bearer <token>'"),
        ((*_bearer(GOOD), *_bearer(WRONG)), "more than one 'authorization' metadata entry"),
        ((("x-api-key", GOOD),), "missing 'authorization' metadata"),
    ],
)
def test_refused_calls_are_unauthenticated(
    stub: morphtune_pb2_grpc.SweepServiceStub,
    metadata: tuple[tuple[str, str], ...],
    reason: str,
) -> None:
    for call, request in (
        (stub.GetSweep, GET_SWEEP),
        (stub.ListSweeps, morphtune_pb2.ListSweepsRequest()),
    ):
        with pytest.raises(grpc.RpcError) as info:
            call(request, metadata=metadata, timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert reason in info.value.details()
        assert not any(secret in info.value.details() for secret in SECRETS)


@pytest.mark.parametrize("token", [GOOD, OTHER_GOOD, ENV_TOKEN])
def test_configured_tokens_are_accepted(
    stub: morphtune_pb2_grpc.SweepServiceStub, token: str
) -> None:
    assert stub.GetSweep(GET_SWEEP, metadata=_bearer(token), timeout=5).sweep_id == SWEEP
    lower = (("authorization", f"bearer {token}"),)  # the scheme is case-insensitive
    assert stub.ListSweeps(morphtune_pb2.ListSweepsRequest(), metadata=lower).sweep_ids == [SWEEP]


def test_health_is_exempt_and_reflection_is_not(auth_target: str) -> None:
    with grpc.insecure_channel(auth_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            ProtoReflectionDescriptorDatabase(channel).get_services()
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_reflection_with_a_token(auth_target: str) -> None:
    with grpc.insecure_channel(auth_target) as plain:
        channel = grpc.intercept_channel(plain, _AddMetadata(_bearer(GOOD)))
        assert SERVICE_NAME in ProtoReflectionDescriptorDatabase(channel).get_services()


class _AddMetadata(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return details._replace(metadata=(*(details.metadata or ()), *self._metadata))  # type: ignore[attr-defined,no-any-return]

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request_iterator)


def test_unauthenticated_bytes_are_never_parsed(auth_target: str) -> None:
    with grpc.insecure_channel(auth_target) as channel:
        raw = channel.unary_unary(f"/{SERVICE_NAME}/GetSweep")
        with pytest.raises(grpc.RpcError) as info:
            raw(b"\xff\x00 not a protobuf \x80", timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    trailing = dict(info.value.trailing_metadata() or ())
    assert trailing.get("www-authenticate") == 'Bearer realm="morphtune"'


def test_refusals_are_counted_by_code(
    stub: morphtune_pb2_grpc.SweepServiceStub, registry: CollectorRegistry
) -> None:
    labels = {"grpc_type": "unary", "grpc_service": SERVICE_NAME, "grpc_method": "GetSweep"}

    def handled(code: str) -> float:
        value = registry.get_sample_value(
            "grpc_server_handled_total", {**labels, "grpc_code": code}
        )
        return value or 0.0

    before = handled("UNAUTHENTICATED"), handled("OK")
    for metadata in ((), _bearer(WRONG), _bearer(EXPIRED)):
        with pytest.raises(grpc.RpcError):
            stub.GetSweep(GET_SWEEP, metadata=metadata, timeout=5)
    stub.GetSweep(GET_SWEEP, metadata=_bearer(GOOD), timeout=5)
    expected = (before[0] + 3, before[1] + 1)
    deadline = time.monotonic() + 10  # counted just after the status is sent
    while (handled("UNAUTHENTICATED"), handled("OK")) != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (handled("UNAUTHENTICATED"), handled("OK")) == expected


def test_tokens_never_logged(
    stub: morphtune_pb2_grpc.SweepServiceStub,
    store_root: Path,
    token_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    for metadata in (
        _bearer(WRONG),
        _bearer(EXPIRED),
        (("authorization", f"Basic {GOOD}"),),
        (("authorization", GOOD),),
        (*_bearer(GOOD), *_bearer(WRONG)),
    ):
        with pytest.raises(grpc.RpcError):
            stub.GetSweep(GET_SWEEP, metadata=metadata, timeout=5)
    stub.GetSweep(GET_SWEEP, metadata=_bearer(GOOD), timeout=5)
    bad_file = token_file.parent / "bad-tokens.txt"
    bad_file.write_text(f"{GOOD}\n{WRONG} expires=never\n")
    with pytest.raises(ValueError, match=r"bad-tokens\.txt:2"):
        TokenSet.load(bad_file)
    text = "\n".join(
        f"{record.getMessage()} {record.exc_text or ''} {record.args!r}"
        for record in caplog.records
    )
    assert "unauthenticated call to /morphtune.v1.SweepService/GetSweep refused" in text
    assert not [secret for secret in SECRETS if secret in text]


# -- exposure warnings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "tokens", "warning"),
    [
        ("0.0.0.0", None, "authentication is OFF while listening on 0.0.0.0"),
        ("0.0.0.0", [GOOD], "bearer tokens travel in plaintext on 0.0.0.0"),
        ("127.0.0.1", None, None),
        ("localhost", None, None),
    ],
)
def test_exposure_warnings(
    store_root: Path,
    caplog: pytest.LogCaptureFixture,
    host: str,
    tokens: list[str] | None,
    warning: str | None,
) -> None:
    caplog.set_level(logging.WARNING, logger="morphtune.service")
    with running_server(store_root, host=host, tokens=tokens):
        pass
    messages = [record.getMessage() for record in caplog.records]
    if warning is None:
        assert not messages
    else:
        assert any(warning in message for message in messages), messages


# -- T9: TLS and mutual TLS -----------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_target(store_root: Path, pki: Pki) -> Iterator[str]:
    tls = TlsConfig(pki.server_cert, pki.server_key)
    with running_server(store_root, tls=tls) as server:
        yield server.target


@pytest.fixture(scope="module")
def mtls_target(store_root: Path, pki: Pki) -> Iterator[str]:
    tls = TlsConfig(pki.server_cert, pki.server_key, client_ca_file=pki.ca)
    with running_server(store_root, tls=tls, tokens=[GOOD]) as server:
        yield server.target


def _get_sweep(channel: grpc.Channel, metadata: tuple[tuple[str, str], ...] = ()) -> str:
    reply = morphtune_pb2_grpc.SweepServiceStub(channel).GetSweep(
        GET_SWEEP, metadata=metadata, timeout=5
    )
    return str(reply.sweep_id)


def _refused(channel: grpc.Channel) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        _get_sweep(channel, _bearer(GOOD))
    return info.value


def test_tls_server(tls_target: str, pki: Pki) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.read("ca"))
    with grpc.secure_channel(tls_target, credentials) as channel:
        assert _get_sweep(channel) == SWEEP
    with grpc.insecure_channel(tls_target) as channel:
        assert _refused(channel).code() == grpc.StatusCode.UNAVAILABLE
    untrusted = grpc.ssl_channel_credentials(root_certificates=pki.read("other_ca"))
    with grpc.secure_channel(tls_target, untrusted) as channel:  # the client checks too
        assert _refused(channel).code() == grpc.StatusCode.UNAVAILABLE


def test_mtls_good_client(mtls_target: str, pki: Pki) -> None:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.read("ca"),
        private_key=pki.read("client_key"),
        certificate_chain=pki.read("client_cert"),
    )
    with grpc.secure_channel(mtls_target, credentials) as channel:
        assert _get_sweep(channel, _bearer(GOOD)) == SWEEP
        with pytest.raises(grpc.RpcError) as info:  # a certificate does not replace the token
            _get_sweep(channel)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("client", ["plaintext", "no client certificate", "another CA"])
def test_mtls_refuses(mtls_target: str, pki: Pki, client: str) -> None:
    if client == "plaintext":
        channel = grpc.insecure_channel(mtls_target)
    elif client == "no client certificate":
        credentials = grpc.ssl_channel_credentials(root_certificates=pki.read("ca"))
        channel = grpc.secure_channel(mtls_target, credentials)
    else:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=pki.read("ca"),
            private_key=pki.read("other_client_key"),
            certificate_chain=pki.read("other_client_cert"),
        )
        channel = grpc.secure_channel(mtls_target, credentials)
    with channel:
        assert _refused(channel).code() == grpc.StatusCode.UNAVAILABLE


def test_bad_tls_files_fail_at_startup(store_root: Path, pki: Pki, tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("not a certificate\n")
    cases = [
        (TlsConfig(pki.server_cert, pki.client_key), "--tls-key"),  # key of another cert
        (TlsConfig(tmp_path / "missing.pem", pki.server_key), "missing.pem"),
        (TlsConfig(pki.server_cert, pki.server_key, not_pem), f"--tls-client-ca {str(not_pem)!r}"),
    ]
    for tls, message in cases:
        with pytest.raises(ValueError) as info:
            build_server(store_root, tls=tls)
        assert message in str(info.value)


def test_cli_refuses_bad_security_flags(
    store_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    serve = ["serve", "--results", str(store_root), "--port", "0", "--metrics-port", "-1"]
    assert cli_main([*serve, "--tls-cert", "server.pem"]) == 2
    assert "--tls-cert and --tls-key go together" in capsys.readouterr().err
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("tiny-secret\n")
    assert cli_main([*serve, "--token-file", str(tokens)]) == 2
    err = capsys.readouterr().err
    assert "tokens.txt:1: a token must be at least 16 characters" in err
    assert "tiny-secret" not in err


# -- token rotation on SIGHUP, in the real process -----------------------------------------


def test_sighup_reloads_the_token_file(store_root: Path, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"{GOOD}\n")
    tokens.chmod(0o600)
    with server_process(store_root, "--token-file", str(tokens)) as server:
        with grpc.insecure_channel(server.target) as channel:
            assert _get_sweep(channel, _bearer(GOOD)) == SWEEP
            tokens.write_text(f"{OTHER_GOOD}\n")
            server.process.send_signal(signal.SIGHUP)
            server.wait_for_log("SIGHUP: 1 tokens loaded")
            assert _get_sweep(channel, _bearer(OTHER_GOOD)) == SWEEP
            assert _refused(channel).code() == grpc.StatusCode.UNAUTHENTICATED
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
    assert not [secret for secret in SECRETS if secret in server.log()]
