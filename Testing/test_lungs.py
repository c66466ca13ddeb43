"""The classical lung mask on the real P001 CT: lungs, not body or table, in a plausible adult range."""

import numpy as np
import pytest
import SimpleITK as sitk

from LightSegLib.geometry import AxialView
from LightSegLib.lungs import LEFT, RIGHT, lung_mask
from LightSegLib.lung_crops import lung_boxes


@pytest.fixture(scope="module")
def p001_lungs(p001):
    view = AxialView.of(p001)
    hu = view.to_canonical(sitk.GetArrayViewFromImage(p001))
    return hu, view, lung_mask(hu, view.spacing)


def test_lung_volumes_are_adult_sized(p001_lungs):
    _, view, mask = p001_lungs
    ml = view.voxel_volume_mm3 / 1000
    right, left = (mask.sides == RIGHT).sum() * ml, (mask.sides == LEFT).sum() * ml
    assert 1500 < right < 4500 and 1300 < left < 4000
    assert 0.7 < right / left < 1.4


def test_mask_holds_lung_not_body_or_table(p001_lungs):
    hu, _, mask = p001_lungs
    inside = hu[mask.lungs]
    assert np.median(inside) < -700  # aerated lung, not soft tissue
    assert np.mean(inside > -300) < 0.08  # vessels and lesions filled in, but little solid tissue
    # nothing at the edges of the field of view (air outside the body, the table)
    assert not mask.lungs[:, :5, :].any() and not mask.lungs[:, -5:, :].any()
    assert not mask.lungs[:, :, :5].any() and not mask.lungs[:, :, -5:].any()


def test_right_lung_is_on_the_patients_right(p001_lungs):
    _, _, mask = p001_lungs
    columns = np.arange(mask.sides.shape[2])
    right_x = (mask.sides == RIGHT).sum(axis=(0, 1)) @ columns / (mask.sides == RIGHT).sum()
    left_x = (mask.sides == LEFT).sum(axis=(0, 1)) @ columns / (mask.sides == LEFT).sum()
    assert right_x < left_x  # canonical L axis: the patient's right has the lower index


def test_consolidation_touching_the_pleura_stays_inside_the_lung(p001_lungs):
    """Paint an 8 mm-radius consolidation (+30 HU) into the real CT, centred on the right lung's lateral wall."""
    hu, view, mask = p001_lungs
    z = int(np.argmax((mask.sides == RIGHT).sum(axis=(1, 2))))
    rows, cols = np.nonzero(mask.sides[z] == RIGHT)
    y = int(np.median(rows))
    x = int(cols[rows == y].min())  # the lateral edge of the right lung on that row
    zz, yy, xx = np.ogrid[:hu.shape[0], :hu.shape[1], :hu.shape[2]]
    s = view.spacing
    ball = ((zz - z) * s[0]) ** 2 + ((yy - y) * s[1]) ** 2 + ((xx - x) * s[2]) ** 2 <= 8.0 ** 2
    lesion = ball & (mask.sides == RIGHT)
    assert lesion.sum() > 100
    painted = np.array(hu, copy=True)
    painted[lesion] = 30
    new_mask = lung_mask(painted, view.spacing)
    # a closing cannot fill a notch completely (the disk intrudes into its mouth): 0.53 with a 10 mm closing,
    # about 0.78 with the 20 mm closing used
    assert new_mask.lungs[lesion].mean() > 0.7
    assert (new_mask.sides[lesion] == RIGHT).mean() > 0.7


def test_crop_boxes_cover_the_lungs(p001_lungs):
    _, _, mask = p001_lungs
    crops = lung_boxes(mask.lungs)
    assert len(crops.slices) == mask.lungs.any(axis=(1, 2)).sum()
    for z, (y0, y1, x0, x1) in zip(crops.slices, crops.boxes):
        assert mask.lungs[z, y0:y1, x0:x1].sum() == mask.lungs[z].sum()


def test_lung_crops_keep_their_hu_view_valid_after_the_caller_drops_the_image(p001):
    import gc

    from LightSegLib.lung_crops import lung_crops

    expected = sitk.GetArrayFromImage(p001)  # a copy, to compare with afterwards
    scan = lung_crops(sitk.Image(p001))  # a temporary copy only the result can keep alive
    gc.collect()
    filler = [sitk.Image(p001) + 1 for _ in range(2)]  # reuse freed memory, if any was freed
    assert scan.image is not None
    assert np.array_equal(scan.view.from_canonical(scan.hu), expected)
    del filler


@pytest.mark.parametrize("cut", ["sides", "all edges"])
def test_lungs_cut_by_the_field_of_view_are_found(p001_lungs, cut):
    """A tight field of view (the lungs touching its edges) keeps the lungs; outside air and the table stay out."""
    from LightSegLib.lungs import field_of_view_cuts

    hu, view, mask = p001_lungs
    columns = np.flatnonzero(mask.lungs.any(axis=(0, 1)))
    rows = np.flatnonzero(mask.lungs.any(axis=(0, 2)))
    margin = int(0.2 * (columns[-1] - columns[0]))
    box = (slice(None), slice(None) if cut == "sides" else slice(rows[0] + 10, rows[-1] - 10),
           slice(columns[0] + margin, columns[-1] - margin))
    cropped = lung_mask(np.ascontiguousarray(hu[box]), view.spacing)
    expected = mask.sides[box]
    overlap = (cropped.lungs & (expected > 0)).sum()
    assert 2 * overlap / (cropped.lungs.sum() + (expected > 0).sum()) > 0.98
    assert (cropped.sides[expected > 0] == expected[expected > 0]).mean() > 0.97
    assert np.median(hu[box][cropped.lungs]) < -700  # lung, not body
    assert "side" in field_of_view_cuts(cropped.lungs) and field_of_view_cuts(mask.lungs) == []


def test_a_patient_turned_face_down_is_recognised_by_the_spine(p001_lungs):
    from LightSegLib.orientation import faces_down, spine_offset_mm

    hu, view, mask = p001_lungs
    assert spine_offset_mm(hu, mask.lungs, view.spacing) > 25  # supine: the spine behind the lungs
    assert not faces_down(hu, mask.lungs, view.spacing)
    assert faces_down(hu[:, ::-1, ::-1], mask.lungs[:, ::-1, ::-1], view.spacing)
    turned = mask.turned()
    assert ((turned.sides == RIGHT) == (mask.sides[:, ::-1, ::-1] == LEFT)).all()


@pytest.mark.parametrize("step, dtype, shape", [(2, np.uint8, (3, 10, 14)), (2, bool, (3, 9, 13)),
                                                (3, np.uint8, (3, 15, 16))])
def test_upsampling_in_plane_repeats_each_voxel_into_its_block(step, dtype, shape):
    """The one-pass upsampling (a byte doubled by multiplying by 257 for step 2) equals two ``np.repeat`` calls."""
    from LightSegLib.lungs import upsample_in_plane

    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 3, (shape[0], -(-shape[1] // step), -(-shape[2] // step))).astype(dtype)
    expected = np.repeat(np.repeat(coarse, step, axis=1), step, axis=2)[:, :shape[1], :shape[2]]
    fine = upsample_in_plane(coarse, step, shape)
    assert fine.dtype == expected.dtype and fine.shape == shape
    assert np.array_equal(fine, expected)


def test_spine_offset_from_row_counts_equals_the_mean_over_voxels(p001_lungs):
    """The spine offset, computed from per-row counts (one pass over the mask), is the mean-over-voxels formula."""
    from LightSegLib.orientation import BONE_HU, CENTRAL_BAND, spine_offset_mm

    hu, view, mask = p001_lungs
    lungs = mask.lungs
    slices = np.flatnonzero(lungs.any(axis=(1, 2)))
    middle = slices[slices.size // 4: 3 * slices.size // 4]
    rows = np.flatnonzero(lungs.any(axis=(0, 2)))
    columns = np.flatnonzero(lungs.any(axis=(0, 1)))
    centre, half = (columns[0] + columns[-1]) / 2, CENTRAL_BAND * (columns[-1] - columns[0])
    band = hu[middle][:, rows[0]:rows[-1] + 1, int(centre - half):int(centre + half) + 1]
    bone_rows = np.nonzero(band > BONE_HU)[1] + rows[0]
    lung_rows = np.nonzero(lungs[middle])[1]
    expected = (bone_rows.mean() - lung_rows.mean()) * view.spacing[1]
    assert spine_offset_mm(hu, lungs, view.spacing) == pytest.approx(expected, abs=1e-9)


def test_closing_eight_slices_to_a_byte_matches_each_slice_closed_alone():
    """The closing packs eight slices into the bits of a byte: no slice may leak into another, and a stack that is
    not a multiple of eight closes as each slice alone does."""
    from LightSegLib.lungs import _close_chunk

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:60, :60]
    inside = np.zeros((11, 60, 60), bool)
    for z in range(11):  # a different ring-shaped blob per slice, with a notch and a hole
        cy, cx = rng.integers(22, 38, 2)
        radius = np.hypot(yy - cy, xx - cx)
        inside[z] = (radius < rng.integers(10, 16)) & (radius > 3) & ~((xx > cx) & (abs(yy - cy) < 2))
    hu = np.where(inside, -850, rng.choice([-600, 40], inside.shape)).astype(np.int16)
    together = _close_chunk(inside, hu, 6.0, 3.0, 10, 8)
    alone = np.concatenate([_close_chunk(inside[z:z + 1], hu[z:z + 1], 6.0, 3.0, 10, 8) for z in range(11)])
    assert np.array_equal(together, alone)
    assert together.sum() > inside.sum()  # the closing did something


def test_a_hole_is_a_hole_of_its_own_slice():
    """The hole in slice 0 lies over background that reaches the edge in slice 1: it is still filled (the holes
    are labelled in 3D, each slice's background apart from its neighbours')."""
    from LightSegLib.lungs import _fill_holes

    closed = np.zeros((2, 20, 20), bool)
    closed[0, 4:16, 4:16] = True
    closed[0, 9:11, 9:11] = False  # a vessel-sized hole
    hu = np.full(closed.shape, -800, np.int16)
    _fill_holes(closed, hu, max_small_hole=10)
    assert closed[0, 9:11, 9:11].all()
    assert not closed[1].any()


def test_between_is_the_span_from_the_first_to_the_last_mask_voxel_of_each_line():
    from LightSegLib.lungs import _between

    mask = np.random.default_rng(1).random((3, 7, 9)) < 0.15
    for axis in (1, 2):
        expected = np.zeros_like(mask)
        lines = np.moveaxis(mask, axis, -1)
        spans = np.moveaxis(expected, axis, -1)
        for index in np.ndindex(lines.shape[:-1]):
            hits = np.flatnonzero(lines[index])
            if hits.size:
                spans[index][hits[0]:hits[-1] + 1] = True
        assert np.array_equal(_between(mask, axis), expected)


@pytest.mark.parametrize("shape", [(3, 10, 12), (3, 9, 11)])
def test_column_counts_of_an_upsampled_mask_are_counted_on_the_coarse_grid(shape):
    from LightSegLib.lungs import _upsampled_column_counts, upsample_in_plane

    coarse = np.random.default_rng(2).integers(0, 3, (shape[0], (shape[1] + 1) // 2, (shape[2] + 1) // 2))
    coarse = coarse.astype(np.uint8)
    fine = upsample_in_plane(coarse, 2, shape)
    for side in (RIGHT, LEFT):
        assert np.array_equal(_upsampled_column_counts(coarse, side, shape), (fine == side).sum(axis=(0, 1)))
