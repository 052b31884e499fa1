"""Hit finders behind one interface: see :mod:`sfx_cnnhit.finders.base`."""

from sfx_cnnhit.finders.base import (
    HitFinder,
    HitRule,
    PeakCountingHitFinder,
    available_finders,
    create_finder,
    register_finder,
)

__all__ = [
    "HitFinder",
    "HitRule",
    "PeakCountingHitFinder",
    "available_finders",
    "create_finder",
    "register_finder",
]
