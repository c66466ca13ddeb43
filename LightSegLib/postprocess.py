"""3D clean-up of the slice-wise infection mask: removes what a 2D network cannot tell from a lesion.

Each rule judges one connected infection component (26-connected, in the canonical (S, P, L) array) as a whole:
- ``remove_domes``: the tip of the liver or spleen dome, seen in a basal slice as a round partial-volume blob or a
  rim surrounded by lung. The organ under the diaphragm continues right below the component: solid tissue outside
  the lungs lies under at least ``DOME_MIN_SUPPORT`` of its lowest slice. A lesion lying on the diaphragm has lung
  (or more lesion) under most of its lowest slice, because the lung runs further down around the dome than it does.
- ``min_lesion_mm3``: components smaller than this volume (speckle on vessels and fissures).
- ``confirm_with``: a second network (a model id) whose own calls, cleaned by its own card's rules, must touch the
  component. The shipped pair: 1.7.0's weights outline the infection, and a network trained with CTs without
  infection in Hounsfield units (which calls next to nothing on normal lungs, but misses faint opacity) confirms it,
  so a component it confirms is kept whole, slices it missed included (benchmarks/RESULTS.md, "Two networks").

The rules are part of the model's inference settings (the card's ``postprocessing``), so ``segment``, the Slicer
module, batch runs and the volume benchmark apply the same ones. They run on the thresholded mask only: the
probability map that ``--probabilities`` writes is the network's, before this step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

SOLID_MIN_HU = -200.0  # outside the lungs and at least this dense: organ or muscle, not air or fat
DOME_MIN_SUPPORT = 0.5


@dataclass(frozen=True)
class PostProcessing:
    """Which clean-up rules run after the network; the default runs none (as for cards written before it existed)."""

    min_lesion_mm3: float = 0.0
    remove_domes: bool = False
    confirm_with: str = ""  # the confirming model's id; empty for none

    @classmethod
    def from_card(cls, settings: dict[str, Any] | None) -> "PostProcessing":
        """From a card's ``postprocessing`` dict; an unknown key is an error (a newer card, or a typo)."""
        settings = dict(settings or {})
        unknown = sorted(set(settings) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown postprocessing settings {unknown}")
        return cls(**settings)

    def to_card(self) -> dict[str, Any]:
        settings = asdict(self)
        if not self.confirm_with:  # cards without a confirming network keep the form they had before it existed
            del settings["confirm_with"]
        return settings

    @property
    def active(self) -> bool:
        return self.min_lesion_mm3 > 0 or self.remove_domes or bool(self.confirm_with)

    def without_confirmation(self) -> "PostProcessing":
        """The same rules without the confirming network."""
        return replace(self, confirm_with="")


# What a newly trained model gets (``lightseg train`` without --init); measured in benchmarks/RESULTS.md, "Volumes"
RECOMMENDED_POSTPROCESSING = PostProcessing(min_lesion_mm3=500.0, remove_domes=True)


def settings_for_new_network(initial: dict[str, Any] | None) -> dict[str, Any]:
    """The clean-up a newly trained network's card gets: its initial model's rules without a confirming network
    (measured with the initial weights, not the new ones), or the recommended rules for a network trained from
    scratch. A fine-tuned site version keeps its base's rules whole (``training/finetune.py``)."""
    if initial is None:
        return RECOMMENDED_POSTPROCESSING.to_card()
    return PostProcessing.from_card(initial).without_confirmation().to_card()


def support_from_below(component: np.ndarray, box: tuple[slice, ...], hu: np.ndarray, lungs: np.ndarray) -> float:
    """Fraction of the component's lowest slice with solid tissue outside the lungs in the slice right below.

    ``component`` is the component's mask inside its bounding ``box`` of the (S, P, L) volume.
    """
    z = box[0].start
    if z == 0:
        return 0.0  # nothing below the scan: no evidence of an organ
    footprint = component[0]
    below = (slice(z - 1, z), box[1], box[2])
    solid = (hu[below][0] >= SOLID_MIN_HU) & ~lungs[below][0]
    return float(solid[footprint].mean())


def clean_infection(infection: np.ndarray, hu: np.ndarray, lungs: np.ndarray, spacing: tuple[float, float, float],
                    settings: PostProcessing, confirmed: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Remove, in place, the components of the canonical ``infection`` mask that a rule rejects.

    ``confirmed`` is the confirming network's cleaned calls on the same grid (required with ``confirm_with``).
    Returns, per rule that removed anything, the number of components and their volume in mL (for the report).
    """
    import cc3d  # here, not at import: every model card load imports this module
    from scipy import ndimage

    if settings.confirm_with and confirmed is None:
        raise ValueError(f"the clean-up needs the calls of the confirming network {settings.confirm_with}")
    removed: dict[str, dict[str, float]] = {}
    if not settings.active or not infection.any():
        return removed
    # label inside the infection's bounding box only: labelling the whole volume is most of the time
    region = tuple(slice(int(hits[0]), int(hits[-1]) + 1)
                   for hits in (np.flatnonzero(infection.any(axis=other)) for other in ((1, 2), (0, 2), (0, 1))))
    labels = cc3d.connected_components(infection[region], connectivity=26)  # ndimage.label's, 3x faster
    voxel_mm3 = float(np.prod(spacing))
    for index, local in enumerate(ndimage.find_objects(labels), start=1):
        component = labels[local] == index
        box = tuple(slice(r.start + b.start, r.start + b.stop) for r, b in zip(region, local))
        voxels = int(np.count_nonzero(component))
        if settings.remove_domes and support_from_below(component, box, hu, lungs) >= DOME_MIN_SUPPORT:
            rule = "dome"
        elif voxels * voxel_mm3 < settings.min_lesion_mm3:
            rule = "small"
        elif settings.confirm_with and not confirmed[box][component].any():
            rule = "unconfirmed"
        else:
            continue
        infection[box][component] = False
        entry = removed.setdefault(rule, {"components": 0, "ml": 0.0})
        entry["components"] += 1
        entry["ml"] += voxels * voxel_mm3 / 1000
    return {rule: {"components": e["components"], "ml": round(e["ml"], 2)} for rule, e in removed.items()}
