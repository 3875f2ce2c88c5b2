"""Result keys shared by the trainables, the searcher and the store callback (this module
imports only ``typing``, so a trial actor unpickling its trainable stays light)."""

from typing import Any

#: A result key a trainable sets (with the message) when the trial failed for a reason
#: that would fail again on a retry: the trial ends after one attempt, told FAIL.
ERROR_KEY = "trial_error"


def joined_keys(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config or metrics mapping with its keys joined by ``.`` (``{"model":
    {"width": 8}}`` -> ``{"model.width": 8}``), leaves as they are: how configs are shown."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(joined_keys(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
