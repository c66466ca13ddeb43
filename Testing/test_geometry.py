"""Canonical axial views of volumes stored in any orientation."""

import itertools

import numpy as np
import pytest
import SimpleITK as sitk

from LightSegLib.geometry import AxialView


def _image(shape=(4, 5, 6), spacing=(0.7, 0.8, 2.0)):
    image = sitk.GetImageFromArray(np.arange(np.prod(shape), dtype=np.float32).reshape(shape))
    image.SetSpacing(spacing)
    image.SetOrigin((10.0, -20.0, 30.0))
    return image


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
@pytest.mark.parametrize("flips", [(False, False, False), (True, False, True), (False, True, False)])
def test_every_permutation_and_flip_gives_the_same_canonical_array(order, flips):
    image = _image()
    reference_view = AxialView.of(image)
    reference = reference_view.to_canonical(sitk.GetArrayFromImage(image))
    stored = sitk.Flip(sitk.PermuteAxes(image, order), flips)
    view = AxialView.of(stored)
    array = sitk.GetArrayFromImage(stored)
    assert np.array_equal(view.to_canonical(array), reference)
    assert view.spacing == reference_view.spacing == (2.0, 0.8, 0.7)
    assert np.array_equal(view.from_canonical(view.to_canonical(array)), array)


def test_canonical_view_writes_through_to_the_original_array():
    stored = sitk.Flip(sitk.PermuteAxes(_image(), (2, 0, 1)), (True, False, False))
    view = AxialView.of(stored)
    labels = np.zeros(sitk.GetArrayViewFromImage(stored).shape, np.uint8)
    view.to_canonical(labels)[1] = 7  # the second axial slice from the feet
    assert labels.sum() == 7 * 5 * 6
    assert not view.is_identity


def test_oblique_direction_picks_the_closest_axes():
    image = _image()
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    image.SetDirection(rotation.ravel().tolist())
    assert AxialView.of(image).is_identity


@pytest.mark.parametrize("order, flips", [((0, 1, 2), (False, False, False)), ((2, 0, 1), (True, False, False)),
                                          ((1, 2, 0), (False, True, True))])
def test_slice_positions_follow_the_canonical_superior_axis(order, flips):
    """Each canonical slice's physical z (for slice-level labels) equals a per-slice index-to-point lookup."""
    from LightSegLib.engine import Segmentation
    from LightSegLib.evaluation import infected_area_per_slice

    stored = sitk.Flip(sitk.PermuteAxes(_image(), order), flips)
    view = AxialView.of(stored)
    labels = sitk.Image(stored.GetSize(), sitk.sitkUInt8)
    labels.CopyInformation(stored)
    _, positions = infected_area_per_slice(Segmentation(labels, view, None, 0, 0), stored)
    shape = sitk.GetArrayViewFromImage(stored).shape
    expected = []
    for z in range(len(positions)):  # the slow way: one physical-point lookup per canonical slice
        index_kji = [s // 2 for s in shape]
        index_kji[view.axes[0]] = shape[view.axes[0]] - 1 - z if view.flips[0] else z
        expected.append(stored.TransformIndexToPhysicalPoint(index_kji[::-1])[2])
    assert np.allclose(positions, expected)
    assert np.all(np.diff(positions) > 0)  # canonical slices run from the feet to the head
