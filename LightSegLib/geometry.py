"""Axial slicing of volumes in any storage orientation, without resampling.

SimpleITK arrays are indexed (k, j, i). The direction matrix says which patient axis (LPS) each index axis follows.
``AxialView`` permutes and flips array axes so that the canonical array is indexed (S, P, L): axial slices, anterior
at the top row and the patient's right on the left column (the radiological display of the training slices).
Both directions are numpy views, so writing into a canonical view writes into the original array.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

import numpy as np
import SimpleITK as sitk


@dataclass(frozen=True)
class AxialView:
    """``axes[c]`` is the original array axis shown as canonical axis c (0 = S, 1 = P, 2 = L); ``flips[c]`` reverses it."""

    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    spacing: tuple[float, float, float]  # mm along the canonical axes (S, P, L)

    @classmethod
    def of(cls, image: sitk.Image) -> "AxialView":
        direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)  # columns: index axes i, j, k
        # Pair each index axis with the patient axis it is closest to (a permutation, also for oblique scans).
        # Only 6 permutations: trying them all is cheaper than importing an assignment solver.
        weight = np.abs(direction)  # weight[patient axis, index axis]
        best = max(permutations(range(3)), key=lambda p: sum(weight[p[i], i] for i in range(3)))
        patient_of_index = dict(enumerate(best))
        axes, flips, spacing = [0, 0, 0], [False] * 3, [0.0] * 3
        for index_axis, patient_axis in patient_of_index.items():
            canonical = 2 - patient_axis  # L (x) -> 2, P (y) -> 1, S (z) -> 0
            axes[canonical] = 2 - index_axis  # numpy axis of index axis i is 2, of k is 0
            flips[canonical] = bool(direction[patient_axis, index_axis] < 0)
            spacing[canonical] = image.GetSpacing()[index_axis]
        return cls(tuple(axes), tuple(flips), tuple(spacing))

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """View of a (k, j, i) array as (S, P, L)."""
        view = np.transpose(array, self.axes)
        return view[tuple(slice(None, None, -1) if f else slice(None) for f in self.flips)]

    def from_canonical(self, canonical: np.ndarray) -> np.ndarray:
        """View of an (S, P, L) array in the original (k, j, i) order."""
        unflipped = canonical[tuple(slice(None, None, -1) if f else slice(None) for f in self.flips)]
        return np.transpose(unflipped, np.argsort(self.axes))

    def turned(self) -> "AxialView":
        """The view turned 180 degrees about the long axis (P and L reversed): a prone patient seen supine."""
        return AxialView(self.axes, (self.flips[0], not self.flips[1], not self.flips[2]), self.spacing)

    @property
    def is_identity(self) -> bool:
        return self.axes == (0, 1, 2) and not any(self.flips)

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing))


def image_from_array(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """A SimpleITK image of ``array`` with exactly the reference's origin, spacing and direction."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.CopyInformation(reference)
    return image


def axial_positions(image: sitk.Image, view: AxialView) -> np.ndarray:
    """The physical superior-inferior position (mm, LPS z) of each canonical axial slice of ``image``."""
    axis = view.axes[0]  # numpy axis; SimpleITK index axis 2 - axis
    # the centre voxel's LPS z, stepped along the canonical S axis by the direction-scaled index step
    index = np.array(sitk.GetArrayViewFromImage(image).shape)[::-1] // 2
    index[2 - axis] = 0
    first = np.array(image.TransformIndexToPhysicalPoint([int(i) for i in index]))
    step = np.array(image.GetDirection()).reshape(3, 3)[:, 2 - axis] * image.GetSpacing()[2 - axis]
    count = sitk.GetArrayViewFromImage(image).shape[axis]
    along = np.arange(count)[::-1] if view.flips[0] else np.arange(count)
    return first[2] + along * step[2]
