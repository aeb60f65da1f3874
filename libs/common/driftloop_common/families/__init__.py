"""Model families, in one registry the trainer and the evaluator both use.

A family knows where a model type's rows come from, how it is fitted, what it logs, and
how a challenger is judged against its champion (`base.Family`). A new family is one
module with one class, and one line in `FAMILIES`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from driftloop_common.contracts.errors import ConfigError
from driftloop_common.contracts.events import ModelType
from driftloop_common.families.base import Family, FamilyOptions
from driftloop_common.families.tabular import TabularFamily
from driftloop_common.families.text import TextFamily

FAMILIES: dict[ModelType, Callable[[str, FamilyOptions], Family[Any]]] = {
    ModelType.INTENT: TextFamily,
    ModelType.SENTIMENT: TextFamily,
    ModelType.NEXT_BEST_ACTION: TextFamily,
    ModelType.LEAD_SCORE: TabularFamily,
}


def family_for(
    model_type: ModelType, store_url: str, options: FamilyOptions | None = None
) -> Family[Any]:
    """The family of `model_type`, reading its rows under `store_url`."""
    try:
        make = FAMILIES[model_type]
    except KeyError:
        raise ConfigError(f"no model family is registered for {model_type}") from None
    return make(store_url, options or FamilyOptions())


__all__ = ["FAMILIES", "Family", "FamilyOptions", "family_for"]
