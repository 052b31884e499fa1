"""Classification tasks: DiffraNet's five classes and the seed's hit/miss merge."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

Task = Literal["fiveclass", "hitmiss"]

#: Class names per task, in logit order.
TASK_CLASSES: dict[str, tuple[str, ...]] = {
    "fiveclass": ("blank", "no_crystal", "weak", "good", "strong"),
    "hitmiss": ("miss", "hit"),
}
#: Classes that count as a hit: the seed merges weak, good and strong into hit (blank, no_crystal: miss).
HIT_CLASS_NAMES = frozenset({"weak", "good", "strong", "hit"})


def hit_class_indices(class_names: Sequence[str]) -> tuple[int, ...]:
    """Indices of the classes in ``class_names`` that count as a hit."""
    return tuple(i for i, name in enumerate(class_names) if name in HIT_CLASS_NAMES)


def to_hitmiss(labels: Any, class_names: Sequence[str]) -> Any:
    """Class labels ``(n,)`` (indices into ``class_names``) to hit/miss labels (0 = miss, 1 = hit).

    Works on numpy arrays (returns int64) and torch tensors (returns long) alike.
    """
    is_hit = np.zeros(len(class_names), dtype=np.int64)
    is_hit[list(hit_class_indices(class_names))] = 1
    if hasattr(labels, "new_tensor"):  # torch
        return labels.new_tensor(is_hit)[labels.long()]
    return is_hit[np.asarray(labels, dtype=np.int64)]
