"""Reading real CT data with its geometry; writing label maps that keep it."""

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from conftest import P001_DICOM, SEMISEG
from LightSegLib import io


def _geometry(image):
    return image.GetOrigin(), image.GetSpacing(), image.GetDirection(), image.GetSize()


def test_p001_dicom_series_geometry():
    loaded = io.read_image(P001_DICOM)
    image = loaded.image
    assert image.GetSize() == (512, 512, 148)
    assert np.allclose(image.GetSpacing(), (0.748046875, 0.748046875, 2.0))
    assert np.allclose(image.GetOrigin(), (-172.1259765625, -328.1259765625, -346.1))
    assert image.GetDirection() == (1, 0, 0, 0, 1, 0, 0, 0, 1)
    assert "1.3.12.2.1107.5.1.4.93005.30000020030507333373200012427" in loaded.note and "148 slices" in loaded.note
    hu = sitk.GetArrayViewFromImage(image)
    assert hu.min() == -1024 and hu.max() > 1000  # Hounsfield units, JPEG-lossless decoded


def _oblique_labels(reference):
    """A label map on a permuted, flipped grid with a non-trivial origin."""
    image = sitk.Flip(sitk.PermuteAxes(reference, (2, 0, 1)), (True, False, False))
    labels = sitk.GetImageFromArray((np.arange(np.prod(image.GetSize())) % 3).astype(np.uint8)
                                    .reshape(sitk.GetArrayViewFromImage(image).shape))
    labels.CopyInformation(image)
    return labels


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nii.gz", ".nii"])
def test_label_maps_keep_geometry(sample, tmp_path, suffix):
    labels = _oblique_labels(sample)
    path = tmp_path / f"labels{suffix}"
    io.write_labels(labels, path)
    back = sitk.ReadImage(str(path))
    assert np.array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(labels))
    assert back.GetSize() == labels.GetSize()
    # NIfTI stores its affine in float32; NRRD and MetaImage keep doubles exactly
    tolerance = 1e-4 if suffix.startswith(".nii") else 0
    for a, b in zip(_geometry(back)[:3], _geometry(labels)[:3]):
        assert np.allclose(a, b, rtol=0, atol=tolerance)
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_seg_nrrd_has_named_coloured_segments_with_terminology(sample, tmp_path):
    labels = _oblique_labels(sample)
    path = tmp_path / "labels.seg.nrrd"
    io.write_labels(labels, path)
    segmentation = slicerio.read_segmentation(str(path))
    assert slicerio.segment_names(segmentation) == ["Lungs", "Infection"]
    infection = slicerio.segment_from_name(segmentation, "Infection")
    assert infection["terminology"]["type"][1] == "23583003"  # Inflammation, in Slicer's DICOM master list
    assert len(infection["color"]) == 3
    k, j, i = np.nonzero(sitk.GetArrayViewFromImage(labels) == io.INFECTION)
    assert infection["extent"] == [i.min(), i.max(), j.min(), j.max(), k.min(), k.max()]  # Slicer's (i, j, k) bounds
    assert np.allclose(segmentation["ijkToLPS"], io.ijk_to_lps(labels))
    mask, note = io.infection_mask_on_grid(path, labels)
    assert note == "segment 'Infection'"
    assert np.array_equal(mask, sitk.GetArrayViewFromImage(labels) == io.INFECTION)
    lungs = np.transpose(slicerio.segment_mask(segmentation, slicerio.segment_from_name(segmentation, "Lungs")),
                         (2, 1, 0))
    assert np.array_equal(lungs, sitk.GetArrayViewFromImage(labels) > 0)


def test_png_output_is_0_255_infection(tmp_path):
    loaded = io.read_image(SEMISEG / "images" / "3.jpg")
    assert loaded.is_2d
    labels = sitk.GetImageFromArray(np.array([[0, 1], [2, 1]], np.uint8))
    io.write_labels(labels, tmp_path / "m.png")
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "m.png"))), [[0, 255], [0, 255]])


def test_colour_image_is_refused(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200
    path = tmp_path / "colour.png"
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(path))
    with pytest.raises(io.LightSegError, match="colour image"):
        io.read_image(path)
