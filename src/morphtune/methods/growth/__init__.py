"""Growth operators behind one interface and a registry, growth targets and plans.

Operators: ``net2net`` (Chen et al., 2016), ``lemon`` (Wang et al., 2024),
``mixturegrowth`` (Pham et al., 2024), ``stack`` (G_stack, Du et al., 2024) and the
baselines ``random`` and ``zero``. ``expand(model, target, operator)`` grows a model and
says which parameters were copied verbatim; ``check_growth`` validates configs alone.
"""

from morphtune.methods.growth import (  # noqa: F401  (registration)
    _baselines,
    _lemon,
    _mixturegrowth,
    _net2net,
    _stack,
)
from morphtune.methods.growth._base import GrowthOperator, GrowthOptions, GrowthResult
from morphtune.methods.growth._net2net import net2net_deepen, net2net_widen
from morphtune.methods.growth._plan import (
    LR_AFTER_GROWTH,
    GrowthEvent,
    GrowthPlan,
    ScheduledEvent,
)
from morphtune.methods.growth._registry import (
    GROWTH_OPERATORS,
    check_growth,
    expand,
    grow,
    register_growth_operator,
)
from morphtune.methods.growth._stack import (
    GStackTiming,
    gstack_growth_fraction,
    gstack_growth_tokens,
    gstack_layer_map,
)
from morphtune.methods.growth._target import growth_target

__all__ = [
    "GROWTH_OPERATORS",
    "LR_AFTER_GROWTH",
    "GStackTiming",
    "GrowthEvent",
    "GrowthOperator",
    "GrowthOptions",
    "GrowthPlan",
    "GrowthResult",
    "ScheduledEvent",
    "check_growth",
    "expand",
    "grow",
    "growth_target",
    "gstack_growth_fraction",
    "gstack_growth_tokens",
    "gstack_layer_map",
    "net2net_deepen",
    "net2net_widen",
    "register_growth_operator",
]
