"""morphtune: search how to scale a neural network efficiently.

Growth, sparsity and subnet choice as searchable knobs, on Ray Tune + Optuna, with a
Parquet results store and a gRPC service. Importing ``morphtune`` is cheap: the spec API
is loaded eagerly, the Ray runner only when ``run_sweep`` is first used, torch only when
``load_model`` is (it rebuilds an exported model in plain PyTorch, without Ray).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from morphtune.spec import SpecError, SpecIssue, SweepSpec, load_spec, parse_spec

if TYPE_CHECKING:
    from morphtune.export import load_model

__version__ = "0.1.0"

__all__ = [
    "SpecError",
    "SpecIssue",
    "SweepSpec",
    "__version__",
    "load_model",
    "load_spec",
    "parse_spec",
    "run_sweep",
]


def __getattr__(name: str) -> Any:
    if name == "run_sweep":
        from morphtune.runner import run_sweep

        return run_sweep
    if name == "load_model":
        from morphtune.export import load_model

        return load_model
    raise AttributeError(f"module 'morphtune' has no attribute {name!r}")
