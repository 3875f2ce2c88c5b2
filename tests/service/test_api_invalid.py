"""T7: 500 generated invalid requests over every RPC and field are each INVALID_ARGUMENT
naming the field (0 UNKNOWN), and 200 random-byte payloads per method leave the server
healthy (health SERVING, a normal call still answers).

ListSweeps has no field to get wrong, so it only gets random bytes. Random bytes mostly fail
to parse as the request message; grpc answers those INTERNAL before the servicer runs."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from morphtune.service import SERVICE_NAME, make_server
from morphtune.service.v1 import morphtune_pb2 as pb
from morphtune.service.v1 import morphtune_pb2_grpc
from tests.service.api_data import SWEEP, write_mo_sweep

REQUESTS = 500
RANDOM_PAYLOADS = 200
SEED = 20261122

BAD_SWEEP_IDS = ["", "../x", "a b", "x" * 200, "-lead", "caf\u00e9", "a/b", ".hidden", "a\nb"]
BAD_MODES = ["MAX", "up", " max", "maximum", "-", "min "]
BAD_SCOPES = ["first", "LAST", "any", "every", " all"]
BAD_OPS = ["~", "=~", "===", "<>", "IN", "contains", "like", "notin"]
UNKNOWN_COLUMNS = ["nope", "metrics.nope", "config.depth", "cost.flops", "signal.width", "xyz.acc"]


def _condition(rng: random.Random, field: str) -> tuple[pb.Condition, str]:
    """One invalid condition and the field path the error must name."""
    kind = rng.randrange(7)
    if kind == 0:
        return pb.Condition(
            column=rng.choice(UNKNOWN_COLUMNS), op="<", number=1.0
        ), f"{field}.column"
    if kind == 1:
        return pb.Condition(column="acc", op=rng.choice(BAD_OPS), number=0.5), f"{field}.op"
    if kind == 2:
        return pb.Condition(column="acc", op=rng.choice(["<", "==", ">="])), f"{field}.value"
    if kind == 3:
        return pb.Condition(column="acc", op="<=", number=float("nan")), f"{field}.number"
    if kind == 4:
        column, value = rng.choice(
            [("acc", {"text": "high"}), ("config.model.family", {"number": 3.0})]
        )
        return pb.Condition(column=column, op="==", **value), f"{field}.value"
    if kind == 5:
        return pb.Condition(column="acc", op="<", numbers=[0.1, 0.2]), f"{field}.numbers"
    return pb.Condition(column="acc", op="in", number=0.5), f"{field}.number"


def _conditions(rng: random.Random, field: str) -> tuple[list[pb.Condition], str]:
    if rng.random() < 0.1:
        many = [pb.Condition(column="acc", op=">", number=0.1)] * rng.randint(33, 40)
        return many, field
    valid = [pb.Condition(column="params", op="<=", number=1e6)] * rng.randint(0, 2)
    bad, name = _condition(rng, f"{field}[{len(valid)}]")
    return [*valid, bad], name


def gen_get_sweep(rng: random.Random) -> tuple[str, Any, str]:
    return "GetSweep", pb.GetSweepRequest(sweep_id=rng.choice(BAD_SWEEP_IDS)), "sweep_id"


def gen_best(rng: random.Random) -> tuple[str, Any, str]:
    request = pb.GetBestConfigRequest(sweep_id=SWEEP, metric="acc", mode="max")
    field = rng.choice(["sweep_id", "metric", "mode", "scope", "constraints"])
    if field == "sweep_id":
        request.sweep_id = rng.choice(BAD_SWEEP_IDS)
    elif field == "metric":
        request.metric = rng.choice(["nope", "accuracy", "metrics.zzz"])
    elif field == "mode":
        request.mode = rng.choice(BAD_MODES)
    elif field == "scope":
        request.scope = rng.choice(BAD_SCOPES)
    else:
        conditions, field = _conditions(rng, "constraints")
        request.constraints.extend(conditions)
    return "GetBestConfig", request, field


def gen_trials(rng: random.Random) -> tuple[str, Any, str]:
    request = pb.ListTrialsRequest(sweep_id=SWEEP)
    field = rng.choice(["sweep_id", "page_size", "page_token", "scope", "order_by", "filter"])
    if field == "sweep_id":
        request.sweep_id = rng.choice(BAD_SWEEP_IDS)
    elif field == "page_size":
        request.page_size = rng.choice([-1, -1000, 1001, 5000, 2**31 - 1])
    elif field == "page_token":
        request.page_token = rng.choice(["garbage", "e30", "eyJxIjoiMCIsIm8iOjF9", "x" * 50])
    elif field == "scope":
        request.scope = rng.choice(BAD_SCOPES)
    elif field == "order_by":
        request.order_by = rng.choice(UNKNOWN_COLUMNS)
    else:
        conditions, field = _conditions(rng, "filter")
        request.filter.extend(conditions)
    return "ListTrials", request, field


def gen_pareto(rng: random.Random) -> tuple[str, Any, str]:
    good = [pb.Objective(metric="acc", mode="max"), pb.Objective(metric="params", mode="min")]
    request = pb.GetParetoFrontRequest(sweep_id=SWEEP, objectives=good)
    field = rng.choice(
        [
            "sweep_id",
            "objectives",
            "objective.metric",
            "objective.mode",
            "reference",
            "scope",
            "constraints",
        ]
    )
    if field == "sweep_id":
        request.sweep_id = rng.choice(BAD_SWEEP_IDS)
    elif field == "objectives":
        count = rng.choice([1, 5, 6])
        del request.objectives[:]
        request.objectives.extend(
            pb.Objective(metric=name, mode="max")
            for name in ["acc", "params", "density", "loss", "config.lr", "metrics.acc"][:count]
        )
        if rng.random() < 0.3:  # two names for one column
            del request.objectives[:]
            request.objectives.extend([good[0], pb.Objective(metric="metrics.acc", mode="min")])
    elif field == "objective.metric":
        index = rng.randrange(2)
        request.objectives[index].metric = rng.choice(["", *UNKNOWN_COLUMNS])
        field = f"objectives[{index}].metric"
    elif field == "objective.mode":
        index = rng.randrange(2)
        request.objectives[index].mode = rng.choice(BAD_MODES)
        field = f"objectives[{index}].mode"
    elif field == "reference":
        request.reference.extend(
            rng.choice([[1.0], [1.0, 2.0, 3.0], [float("nan"), 1.0], [0.0, float("inf")]])
        )
    elif field == "scope":
        request.scope = rng.choice(BAD_SCOPES)
    else:
        conditions, field = _conditions(rng, "constraints")
        request.constraints.extend(conditions)
    return "GetParetoFront", request, field


def gen_watch(rng: random.Random) -> tuple[str, Any, str]:
    request = pb.WatchSweepRequest(sweep_id=SWEEP)
    field = rng.choice(["sweep_id", "resume_token", "trial_id", "from_end"])
    if field == "sweep_id":
        request.sweep_id = rng.choice(BAD_SWEEP_IDS)
    elif field == "resume_token":
        request.resume_token = rng.choice(["garbage", "e30", "x" * 40, "eyJ2IjoxfQ"])
    elif field == "trial_id":
        request.trial_id = rng.choice(["a\nb", "\x00", "t" * 300, "tab\there"])
    else:
        request.from_end = True
        request.resume_token = "eyJ2IjoxfQ"
    return "WatchSweep", request, field


def gen_submit(rng: random.Random) -> tuple[str, Any, str]:
    request = pb.SubmitSweepRequest(spec_yaml="name: ok\n")
    field = rng.choice(["spec_yaml", "sweep_id"])
    if field == "spec_yaml":
        request.spec_yaml = rng.choice(
            ["", "   \n", "a: [1, 2\n", "- a\n- b\n", "just text", "x: 1\n" * 14000, ":\n  - {"]
        )
    else:
        request.sweep_id = rng.choice(BAD_SWEEP_IDS[1:])  # "" means: the spec's name
    return "SubmitSweep", request, field


def gen_cancel(rng: random.Random) -> tuple[str, Any, str]:
    job_id = rng.choice(["", "a/b", " x", "x" * 200, "../../api", "job id", "\u00e9"])
    return "CancelSweep", pb.CancelSweepRequest(job_id=job_id), "job_id"


GENERATORS: list[Callable[[random.Random], tuple[str, Any, str]]] = [
    gen_get_sweep,
    gen_best,
    gen_trials,
    gen_pareto,
    gen_watch,
    gen_submit,
    gen_cancel,
]


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root: Path = tmp_path_factory.mktemp("t7")
    write_mo_sweep(root)
    server, port = make_server(root, port=0)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


def _call(stub: morphtune_pb2_grpc.SweepServiceStub, method: str, request: Any) -> None:
    if method == "WatchSweep":
        for _ in stub.WatchSweep(request, timeout=10):
            raise AssertionError("an invalid WatchSweep sent a row")
        return
    getattr(stub, method)(request, timeout=10)


def test_generated_invalid_requests_name_their_field(target: str) -> None:
    rng = random.Random(SEED)
    codes: Counter[str] = Counter()
    covered: Counter[str] = Counter()
    failures = []
    with grpc.insecure_channel(target) as channel:
        stub = morphtune_pb2_grpc.SweepServiceStub(channel)
        for number in range(REQUESTS):
            method, request, field = GENERATORS[number % len(GENERATORS)](rng)
            covered[f"{method}.{field.split('[')[0]}"] += 1
            try:
                _call(stub, method, request)
            except grpc.RpcError as error:
                codes[error.code().name] += 1
                if error.code() != grpc.StatusCode.INVALID_ARGUMENT or field not in error.details():
                    failures.append((method, field, error.code().name, error.details()[:200]))
            else:
                failures.append((method, field, "OK", str(request)[:200]))
    assert codes["UNKNOWN"] == 0
    assert failures == [], f"{len(failures)} of {REQUESTS} not INVALID_ARGUMENT naming the field"
    assert codes == {"INVALID_ARGUMENT": REQUESTS}
    fields = {name.split(".", 1)[1] for name in covered}
    assert {
        "sweep_id",
        "constraints",
        "filter",
        "page_size",
        "page_token",
        "objectives",
        "reference",
        "resume_token",
        "trial_id",
        "spec_yaml",
        "job_id",
        "mode",
        "scope",
        "metric",
        "order_by",
        "from_end",
    } <= fields


METHODS = [
    ("ListSweeps", "unary"),
    ("GetSweep", "unary"),
    ("GetBestConfig", "unary"),
    ("ListTrials", "unary"),
    ("GetParetoFront", "unary"),
    ("WatchSweep", "stream"),
    ("SubmitSweep", "unary"),
    ("CancelSweep", "unary"),
]


def test_random_bytes_leave_the_server_healthy(target: str) -> None:
    rng = random.Random(SEED + 1)
    codes: Counter[str] = Counter()
    with grpc.insecure_channel(target) as channel:
        for method, kind in METHODS:
            path = f"/{SERVICE_NAME}/{method}"
            if kind == "unary":
                call = channel.unary_unary(
                    path, request_serializer=None, response_deserializer=None
                )
            else:
                call = channel.unary_stream(
                    path, request_serializer=None, response_deserializer=None
                )
            for _ in range(RANDOM_PAYLOADS):
                payload = rng.randbytes(rng.randrange(0, 96))
                try:
                    if kind == "unary":
                        call(payload, timeout=10)
                    else:
                        for _ in call(payload, timeout=2):
                            break
                    codes["OK"] += 1
                except grpc.RpcError as error:
                    codes[error.code().name] += 1
        assert codes["UNKNOWN"] == 0, codes
        assert sum(codes.values()) == RANDOM_PAYLOADS * len(METHODS)
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
        stub = morphtune_pb2_grpc.SweepServiceStub(channel)
        best = stub.GetBestConfig(pb.GetBestConfigRequest(sweep_id=SWEEP), timeout=10)
        assert best.metric == "acc" and best.trial_id
        assert stub.ListSweeps(pb.ListSweepsRequest(), timeout=10).sweep_ids == [SWEEP]


@pytest.mark.parametrize("method", ["GetSweep", "GetBestConfig", "ListTrials"])
def test_a_huge_invalid_value_is_still_invalid_argument_naming_its_field(
    target: str, method: str
) -> None:
    # the error echoes the value: uncut, 32 KiB of it would overflow the status trailer
    request = getattr(pb, f"{method}Request")(sweep_id="x" * 32768 + "/")
    with grpc.insecure_channel(target) as channel:
        stub = morphtune_pb2_grpc.SweepServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            _call(stub, method, request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "sweep_id" in raised.value.details()
    assert len(raised.value.details()) <= 1024
