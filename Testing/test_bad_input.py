"""Every bad input gives one line naming the file and the problem, exit code 2, and no output file."""

import os
import shutil
import subprocess
import sys

import numpy as np
import SimpleITK as sitk

from conftest import REPO, SAMPLE, run_cli


def _write(image, path):
    sitk.WriteImage(image, str(path))
    return path


def _volume(array, path):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.5, 1.5, 4.0))
    return _write(image, path)


def _assert_refused(result, output, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("lightseg: error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert not output.exists()
    assert not list(output.parent.glob(f".{output.name}*"))  # no temporary left


def _segment(input_path, output, card, *extra):
    return run_cli("segment", input_path, "-o", output, "--model", card.path, *extra)


def test_missing_file(tmp_path, untrained_card):
    out = tmp_path / "out.nii.gz"
    _assert_refused(_segment(tmp_path / "nope.nii.gz", out, untrained_card), out, "nope.nii.gz", "no such file")


def test_not_an_image(tmp_path, untrained_card):
    bogus = tmp_path / "notes.nii.gz"
    bogus.write_text("this is not an image")
    out = tmp_path / "out.nii.gz"
    _assert_refused(_segment(bogus, out, untrained_card), out, "notes.nii.gz", "cannot read as an image")


def test_4d_image(tmp_path, untrained_card):
    path = _write(sitk.Image([8, 8, 8, 2], sitk.sitkInt16), tmp_path / "dynamic.nii.gz")
    out = tmp_path / "out.nii.gz"
    _assert_refused(_segment(path, out, untrained_card), out, "dynamic.nii.gz", "4D")


def test_two_component_image(tmp_path, untrained_card):
    path = _write(sitk.Image([8, 8, 8], sitk.sitkVectorInt16, 2), tmp_path / "vector.nrrd")
    out = tmp_path / "out.nii.gz"
    _assert_refused(_segment(path, out, untrained_card), out, "vector.nrrd", "2 components")


def test_mr_like_intensities(tmp_path, untrained_card):
    mr = np.random.default_rng(0).integers(0, 1200, (20, 64, 64)).astype(np.int16)
    path = _volume(mr, tmp_path / "t1.nii.gz")
    out = tmp_path / "out.nii.gz"
    _assert_refused(_segment(path, out, untrained_card), out, "t1.nii.gz", "Hounsfield")


def test_empty_folder(tmp_path, untrained_card):
    folder = tmp_path / "dicom"
    folder.mkdir()
    out = tmp_path / "out.nii.gz"
    _assert_refused(_segment(folder, out, untrained_card), out, "dicom", "folder is empty")


def test_folder_without_dicom(tmp_path, untrained_card):
    folder = tmp_path / "stuff"
    folder.mkdir()
    (folder / "readme.txt").write_text("hello")
    out = tmp_path / "out.nii.gz"
    _assert_refused(_segment(folder, out, untrained_card), out, "stuff", "no DICOM series")


def test_existing_output_is_not_overwritten(tmp_path, untrained_card):
    out = tmp_path / "out.nii.gz"
    out.write_bytes(b"precious")
    result = _segment(SAMPLE, out, untrained_card)
    assert result.returncode == 2 and "use --force" in result.stderr
    assert out.read_bytes() == b"precious"


def test_unknown_model(tmp_path):
    out = tmp_path / "out.nii.gz"
    result = run_cli("segment", SAMPLE, "-o", out, "--model", "no-such-model")
    _assert_refused(result, out, "no-such-model", "unknown model")


def test_corrupted_weights(tmp_path, untrained_card):
    models = tmp_path / "models"
    shutil.copytree(untrained_card.path.parent, models)
    weights = models / untrained_card.weights_file
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    out = tmp_path / "out.nii.gz"
    result = run_cli("segment", SAMPLE, "-o", out, "--model", models / untrained_card.path.name)
    _assert_refused(result, out, str(weights), "sha256")


def test_unknown_test_time_flip_in_a_card_or_an_option(tmp_path, untrained_card):
    models = tmp_path / "models"
    shutil.copytree(untrained_card.path.parent, models)
    card = models / untrained_card.path.name
    card.write_text(card.read_text().replace('"test_time_flips": []', '"test_time_flips": ["diagonal"]'))
    out = tmp_path / "out.nii.gz"
    _assert_refused(run_cli("segment", SAMPLE, "-o", out, "--model", card), out, str(card), "'diagonal'")
    result = run_cli("segment", SAMPLE, "-o", out, "--model", untrained_card.path, "--test-time-flips", "sideways")
    _assert_refused(result, out, "--test-time-flips", "'sideways'")


def test_unsupported_output_type(tmp_path, untrained_card):
    out = tmp_path / "out.xyz"
    _assert_refused(_segment(SAMPLE, out, untrained_card), out, "out.xyz", "unsupported output type")


def test_no_lungs_warns_and_writes_an_empty_mask(tmp_path, untrained_card):
    """A water cylinder in air: a CT with no lungs."""
    z, y, x = np.ogrid[:16, :64, :64]
    phantom = np.where((y - 32) ** 2 + (x - 32) ** 2 < 24 ** 2, 0, -1000).astype(np.int16) + 0 * z
    path = _volume(phantom, tmp_path / "phantom.nrrd")
    out = tmp_path / "out.nrrd"
    result = _segment(path, out, untrained_card)
    assert result.returncode == 0, result.stderr
    assert "phantom.nrrd: no lungs found" in result.stderr
    labels = sitk.ReadImage(str(out))
    assert labels.GetSize() == (64, 64, 16) and sitk.GetArrayViewFromImage(labels).max() == 0


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """``lightseg models --json | head -1``: the closed pipe ends the command with SIGPIPE's status, no traceback."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first byte is written
    result = subprocess.run([sys.executable, "-m", "LightSegLib", "models", "--json"], stdout=write,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=300)
    os.close(write)
    assert result.returncode == 141, result.stderr
    assert result.stderr == ""
