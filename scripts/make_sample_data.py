"""Derive the bundled sample CT from the COVID-CT-MD P001 DICOM series: chest-cropped, 1.5 x 1.5 x 4 mm, NRRD.

    python scripts/make_sample_data.py ../shared/data/covid-ct-md/P001 Resources/SampleData/P001-chest.nrrd
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from LightSegLib.io import read_image  # noqa: E402

IN_PLANE_MM = 1.5
SLICE_MM = 4.0
BODY_HU = -500
MARGIN_VOXELS = 4


def body_box(hu: np.ndarray) -> tuple[slice, slice]:
    """In-plane (y, x) bounding box of the largest above-air component (the body, without the table)."""
    labels, _ = ndimage.label(hu > BODY_HU)
    body = labels == np.bincount(labels.ravel())[1:].argmax() + 1
    ys, xs = np.flatnonzero(body.any(axis=(0, 2))), np.flatnonzero(body.any(axis=(0, 1)))
    return (slice(max(ys[0] - MARGIN_VOXELS, 0), ys[-1] + MARGIN_VOXELS + 1),
            slice(max(xs[0] - MARGIN_VOXELS, 0), xs[-1] + MARGIN_VOXELS + 1))


def main(source: str, target: str) -> None:
    image = read_image(source).image
    spacing = image.GetSpacing()
    target_spacing = (IN_PLANE_MM, IN_PLANE_MM, SLICE_MM)
    size = [int(round(image.GetSize()[i] * spacing[i] / target_spacing[i])) for i in range(3)]
    resampled = sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(),
                              target_spacing, image.GetDirection(), -1024, sitk.sitkInt16)
    ys, xs = body_box(sitk.GetArrayViewFromImage(resampled))
    cropped = resampled[xs, ys, :]
    sitk.WriteImage(cropped, target, useCompression=True)
    print(f"{target}: size {cropped.GetSize()}, spacing {cropped.GetSpacing()}, {Path(target).stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main(*sys.argv[1:3])
