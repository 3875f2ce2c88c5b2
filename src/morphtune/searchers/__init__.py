"""Searchers: the spec's space as an Optuna define-by-run space, samplers, schedulers."""

from morphtune.searchers._optuna_search import SafeOptunaSearch
from morphtune.searchers._samplers import SAMPLERS, make_sampler
from morphtune.searchers._schedulers import SCHEDULERS, make_scheduler
from morphtune.searchers._space import active, define_by_run, suggest

__all__ = [
    "SAMPLERS",
    "SCHEDULERS",
    "SafeOptunaSearch",
    "active",
    "define_by_run",
    "make_sampler",
    "make_scheduler",
    "suggest",
]
