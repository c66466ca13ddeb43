"""In-slice morphology (``slice_morphology.py``): the octagon, and eight slices packed into a byte."""

import numpy as np
import pytest

from LightSegLib.slice_morphology import close_octagon, dilate_octagon, dilate_slices, pack_slices, unpack_slices


@pytest.mark.parametrize("radius", [5.3, 13.3])
def test_octagon_closing_is_close_to_a_disk(radius):
    """The four-segment octagon used for closing lies between the disks of radius r - 1.5 and r + 1, area within 10 %."""
    size = 41
    point = np.zeros((1, size, size), bool)
    point[0, size // 2, size // 2] = True
    octagon = dilate_octagon(point, radius)[0]
    yy, xx = np.mgrid[:size, :size] - size // 2
    distance = np.hypot(yy, xx)
    assert octagon[distance <= radius - 1.5].all()
    assert not octagon[distance > radius + 1].any()
    assert abs(octagon.sum() / (np.pi * radius**2) - 1) < 0.1
    assert (octagon == octagon[::-1]).all() and (octagon == octagon.T).all()  # symmetric


@pytest.mark.parametrize("depth", [1, 8, 13])
def test_packing_eight_slices_to_a_byte_round_trips(depth):
    mask = np.random.default_rng(depth).random((depth, 5, 7)) < 0.5
    packed = pack_slices(mask)
    assert packed.shape == ((depth + 7) // 8, 5, 7)
    assert np.array_equal(unpack_slices(packed, depth), mask)


def test_packed_dilation_and_closing_match_each_slice_alone():
    mask = np.random.default_rng(3).random((11, 40, 40)) < 0.03
    alone = np.concatenate([dilate_octagon(mask[z:z + 1], 4.0) for z in range(11)])
    assert np.array_equal(dilate_slices(mask, 4.0), alone)
    closed = unpack_slices(close_octagon(pack_slices(mask), 4.0), 11)
    assert np.array_equal(closed, np.concatenate([close_octagon(mask[z:z + 1], 4.0) for z in range(11)]))
