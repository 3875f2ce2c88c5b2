"""Growth operators (Net2Net so far) behind a registry, and growth targets."""

from morphtune.methods.growth._net2net import net2net_deepen, net2net_widen
from morphtune.methods.growth._registry import (
    GROWTH_OPERATORS,
    GrowthOperator,
    grow,
    register_growth_operator,
)
from morphtune.methods.growth._target import growth_target

__all__ = [
    "GROWTH_OPERATORS",
    "GrowthOperator",
    "grow",
    "growth_target",
    "net2net_deepen",
    "net2net_widen",
    "register_growth_operator",
]
