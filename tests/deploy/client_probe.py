"""The service image's client-side workload, run by ``test_service_deps.py`` as a script.

``python tests/deploy/client_probe.py TARGET TOKEN SWEEP SPEC_FILE`` runs the query CLI
(``sweeps``, ``best``, ``pareto``, ``trials``, ``watch``) against the server at TARGET and a
SubmitSweep of SPEC_FILE's text, and prints one JSON line: each command's exit status and
the health status and SubmitSweep's gRPC status code and details.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys


def main(argv: list[str]) -> int:
    target, token, sweep, spec_file = argv
    import grpc

    from morphtune import cli
    from morphtune.service import SweepClient

    common = ["--server", target, "--token", token, "--timeout", "20"]
    commands = {
        "sweeps": ["sweeps", *common],
        "best": ["best", sweep, *common, "--json"],
        "pareto": ["pareto", sweep, *common, "--objective", "acc:max", "--objective", "loss:min"],
        "trials": ["trials", sweep, *common, "--limit", "3"],
        "watch": ["watch", sweep, *common, "--count", "2"],
    }
    exits: dict[str, int] = {}
    output = io.StringIO()
    for name, command in commands.items():
        with contextlib.redirect_stdout(output):
            exits[name] = cli.main(command)
    with open(spec_file, encoding="utf-8") as handle:
        spec_text = handle.read()
    submit: dict[str, str] = {}
    with SweepClient(target, timeout=60.0, token=token) as client:
        health = client.health("")
        try:
            answer = client.submit(spec_text, sweep_id="probe-submit")
            submit = {"code": "OK", "details": json.dumps(answer)}
        except grpc.RpcError as error:
            submit = {"code": error.code().name, "details": error.details() or ""}
    print(json.dumps({"exits": exits, "health": health, "submit": submit}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
