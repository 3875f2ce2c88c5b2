"""Model families that growth, sparsity and supernets act on, behind a registry."""

from morphtune.models._mlp import MLP, MLPConfig, mlp_config_from
from morphtune.models._registry import MODEL_FAMILIES, build_model, register_model

__all__ = ["MLP", "MODEL_FAMILIES", "MLPConfig", "build_model", "mlp_config_from", "register_model"]
