"""morphtune: search how to scale a neural network efficiently.

Growth, sparsity and subnet choice as searchable knobs, on Ray Tune + Optuna, with a
Parquet results store and a gRPC service. Importing ``morphtune`` is cheap: the spec API
is loaded eagerly, the Ray runner only when ``run_sweep`` is first used.
"""

from __future__ import annotations

from typing import Any

from morphtune.spec import SpecError, SpecIssue, SweepSpec, load_spec, parse_spec

__version__ = "0.1.0"

__all__ = [
    "SpecError",
    "SpecIssue",
    "SweepSpec",
    "__version__",
    "load_spec",
    "parse_spec",
    "run_sweep",
]


def __getattr__(name: str) -> Any:
    if name == "run_sweep":
        from morphtune.runner import run_sweep

        return run_sweep
    raise AttributeError(f"module 'morphtune' has no attribute {name!r}")
