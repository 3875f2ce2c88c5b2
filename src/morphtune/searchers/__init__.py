"""Searchers: the spec's space as an Optuna define-by-run space, samplers, schedulers."""

from morphtune.searchers._constraints import ConstraintChecker, TrialCost
from morphtune.searchers._optuna_search import ERROR_KEY, SafeOptunaSearch
from morphtune.searchers._proxy_filter import ProxyFilteredSearch, make_proxy_scorer
from morphtune.searchers._samplers import SAMPLERS, make_sampler
from morphtune.searchers._schedulers import SCHEDULERS, make_scheduler
from morphtune.searchers._space import active, define_by_run, suggest
from morphtune.searchers._subnet_score import ScoringPayload, SubnetScore, SubnetScorer
from morphtune.searchers._subnet_search import (
    SUBNET_CONSTRAINTS,
    SUBNET_METRICS,
    SUBNET_SAMPLERS,
    ScoredSubnet,
    SearchOutcome,
    SubnetSearch,
    pareto_front,
)

__all__ = [
    "ERROR_KEY",
    "SAMPLERS",
    "SCHEDULERS",
    "SUBNET_CONSTRAINTS",
    "SUBNET_METRICS",
    "SUBNET_SAMPLERS",
    "ConstraintChecker",
    "ProxyFilteredSearch",
    "SafeOptunaSearch",
    "ScoredSubnet",
    "ScoringPayload",
    "SearchOutcome",
    "SubnetScore",
    "SubnetScorer",
    "SubnetSearch",
    "TrialCost",
    "active",
    "define_by_run",
    "make_proxy_scorer",
    "make_sampler",
    "make_scheduler",
    "pareto_front",
    "suggest",
]
