"""Results store: one Parquet dataset per sweep, written atomically and deduplicated.

Layout under a root (default ``./morphtune-results``; any pyarrow filesystem URI such as
``s3://bucket/prefix`` works too)::

    <root>/<sweep_id>/manifest.json            resolved spec, objective, status
    <root>/<sweep_id>/results/part-*.parquet   one row per reported iteration
    <root>/<sweep_id>/trials/part-*.parquet    one row per trial status change

:class:`ResultWriter` writes (row dicts, or columns for bulk ingest) and compacts,
:class:`SweepStore` reads and caches per sweep under :meth:`SweepStore.fingerprint`; the
column schema is documented in :mod:`morphtune.store._schema` and ``docs/store.md``.
"""

from morphtune.store._best import BEST_SCOPES, BestResult
from morphtune.store._errors import (
    CorruptFileError,
    NoResults,
    PartVanished,
    StoreError,
    SweepNotFound,
)
from morphtune.store._reader import DEFAULT_ROOT, SweepStore, TrialSummary
from morphtune.store._schema import (
    COST_KEYS,
    RESULT_BASE_SCHEMA,
    SIGNAL_KEYS,
    TERMINAL_STATES,
    TRIAL_SCHEMA,
    TRIAL_STATES,
    validate_sweep_id,
)
from morphtune.store._writer import (
    DEFAULT_COMPACT_BYTES,
    OBJECTIVE_MODES,
    ResultWriter,
    validate_objective,
)

__all__ = [
    "BEST_SCOPES",
    "COST_KEYS",
    "DEFAULT_COMPACT_BYTES",
    "DEFAULT_ROOT",
    "OBJECTIVE_MODES",
    "RESULT_BASE_SCHEMA",
    "SIGNAL_KEYS",
    "TERMINAL_STATES",
    "TRIAL_SCHEMA",
    "TRIAL_STATES",
    "BestResult",
    "CorruptFileError",
    "NoResults",
    "PartVanished",
    "ResultWriter",
    "StoreError",
    "SweepNotFound",
    "SweepStore",
    "TrialSummary",
    "validate_objective",
    "validate_sweep_id",
]
