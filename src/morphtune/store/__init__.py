"""Results store: one Parquet dataset per sweep, written atomically and deduplicated.

Layout under a root directory (default ``./morphtune-results``)::

    <root>/<sweep_id>/manifest.json            resolved spec, objective, status
    <root>/<sweep_id>/results/part-*.parquet   one row per reported iteration
    <root>/<sweep_id>/trials/part-*.parquet    one row per trial status change

:class:`ResultWriter` writes, :class:`SweepStore` reads; the column schema is documented in
:mod:`morphtune.store._schema` and ``docs/store.md``. Local directories only for now.
"""

from morphtune.store._best import BEST_SCOPES, BestResult
from morphtune.store._errors import CorruptFileError, NoResults, StoreError, SweepNotFound
from morphtune.store._reader import DEFAULT_ROOT, SweepStore, TrialSummary
from morphtune.store._schema import (
    RESULT_BASE_SCHEMA,
    TERMINAL_STATES,
    TRIAL_SCHEMA,
    TRIAL_STATES,
    validate_sweep_id,
)
from morphtune.store._writer import OBJECTIVE_MODES, ResultWriter, validate_objective

__all__ = [
    "BEST_SCOPES",
    "DEFAULT_ROOT",
    "OBJECTIVE_MODES",
    "RESULT_BASE_SCHEMA",
    "TERMINAL_STATES",
    "TRIAL_SCHEMA",
    "TRIAL_STATES",
    "BestResult",
    "CorruptFileError",
    "NoResults",
    "ResultWriter",
    "StoreError",
    "SweepNotFound",
    "SweepStore",
    "TrialSummary",
    "validate_objective",
    "validate_sweep_id",
]
