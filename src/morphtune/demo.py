"""End-to-end demo: sweep on local Ray -> Parquet store -> gRPC service -> best config.

Every hop is the real one: the sweep runs on an embedded Ray, results land in Parquet,
a gRPC server (and its Prometheus endpoint) is started on loopback over that store, and
the best configuration is read back through the gRPC client, not from the store.
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

from morphtune.spec import SweepSpec

__all__ = ["run_demo"]


def run_demo(spec: SweepSpec, *, results_root: str | Path | None = None) -> int:
    from morphtune.cli import format_best
    from morphtune.metrics import build_registry, start_metrics_http
    from morphtune.runner import run_sweep
    from morphtune.service import SweepClient, make_server

    root = Path(results_root or spec.storage.results).resolve()
    print(
        f"[morphtune] running sweep {spec.name!r}: {spec.search.num_samples} trials, "
        f"{spec.search.scheduler.name} scheduler, {spec.search.max_concurrent} concurrent, "
        f"dataset {spec.dataset.name}"
    )
    started = time.time()
    outcome = run_sweep(spec, results_root=root, overwrite=True)
    sweep_wall = time.time() - started
    print(
        f"[morphtune] sweep finished in {sweep_wall:.1f} s; trials by state: "
        f"{outcome.trial_states}; results in {outcome.results_dir}"
    )

    registry = build_registry(root)
    server, port = make_server(root, port=0, metrics_registry=registry)
    server.start()
    http, metrics_port = start_metrics_http(0, registry)
    try:
        with SweepClient(f"127.0.0.1:{port}") as client:
            print(f"[morphtune] gRPC service on 127.0.0.1:{port}: health {client.health()}")
            best = client.best(outcome.sweep_id)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            exposition = r.read().decode()
    finally:
        server.stop(grace=1.0).wait()
        http.shutdown()
        http.server_close()

    print("[morphtune] best configuration, read back with GetBestConfig over gRPC:")
    print(format_best(best))
    metrics = best["metrics"]
    print(
        f"  validation accuracy = {metrics.get('val_acc', float('nan')):.4f}   "
        f"validation loss = {metrics.get('val_loss', float('nan')):.4f}"
    )
    print(
        f"  params = {metrics.get('params', 0):.0f}"
        f"  nonzero = {metrics.get('nonzero_params', 0):.0f}"
        f"  density = {metrics.get('density', 1.0):.3f}  width = {metrics.get('width', 0):.0f}"
        f"  forward FLOPs/sample = {metrics.get('flops', 0):.0f}"
    )
    print(f"[morphtune] /metrics on 127.0.0.1:{metrics_port}:")
    for line in exposition.splitlines():
        if line.startswith(("morphtune_trials", "morphtune_best_objective")):
            print(f"    {line}")
    print(f"[morphtune] demo wall time {time.time() - started:.1f} s")
    return 0
