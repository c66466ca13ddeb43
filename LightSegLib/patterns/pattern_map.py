"""From the infection label map and the consolidation probability to the pattern map."""

from __future__ import annotations

import numpy as np

from ..io import INFECTION

NONE, GROUND_GLASS, CONSOLIDATION = 0, 1, 2
PATTERN_NAMES = {GROUND_GLASS: "ground_glass", CONSOLIDATION: "consolidation"}


def pattern_map(labels: np.ndarray, consolidation: np.ndarray) -> np.ndarray:
    """0 outside the infection, 2 where consolidation is at least as likely as not (``consolidation`` >= 0.5, or
    >= 128 when it is stored as bytes), 1 elsewhere in the infection: the patterns always add up to the infection.
    Byte arithmetic throughout (a CT has tens of millions of voxels)."""
    half = 128 if consolidation.dtype == np.uint8 else 0.5
    infected = labels == INFECTION
    patterns = infected.view(np.uint8).copy()  # GROUND_GLASS where infected
    patterns += infected & (consolidation >= half)  # CONSOLIDATION = GROUND_GLASS + 1
    return patterns
