"""The corpus of real-world CT variants, made from a real DICOM series (P001 by default) on demand.

Each variant is written into a folder as a user would meet it (a volume file or a DICOM folder) and carries what
LightSeg must do with it: segment it in agreement with the unaltered scan, or refuse it with a one-line message.
``Testing/test_ct_variants.py`` checks every variant; ``benchmarks/variant_benchmark.py`` prints the README table.
Nothing here is committed data: the corpus is rebuilt from the shared CT each time (a few seconds per variant).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

NOISE_SD_HU = 40.0  # added to a standard-dose scan: about the noise of a quarter-dose one
SHARPEN_AMOUNT = 1.0  # unsharp masking with a 1-pixel Gaussian: the edge overshoot and noise of a lung kernel
CUT_FRACTION = 0.2  # of the lungs' extent removed on each side (lateral cut) or at one end (apex, bases)
TILT_DEG = 15.0


@dataclass
class Scan:
    """The unaltered scan a variant is made from: its DICOM folder, image and the lungs' index box (i, j, k)."""

    folder: Path
    image: sitk.Image
    lung_box: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # [start, stop) along i, j, k


@dataclass
class Variant:
    name: str
    description: str
    make: Callable[[Scan, Path], Path]  # writes the variant under the folder given, returns what to segment
    expect: str = "segment"  # or "refuse"
    lungs_whole: bool = True  # lung volumes are compared only where the variant keeps the lungs whole
    refusal: str = ""  # words the refusal must contain
    note: str = ""  # words the report's input note must contain
    turned_in_scanner_frame: bool = False  # the body is turned 180 degrees but the header says it is not


def load_scan(folder: Path, lungs: np.ndarray) -> Scan:
    """``lungs`` is the unaltered scan's lung mask in (k, j, i) array order."""
    from LightSegLib.io import read_image

    image = read_image(folder).image
    box = []
    for axis in (2, 1, 0):
        hits = np.flatnonzero(lungs.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append((int(hits[0]), int(hits[-1]) + 1))
    return Scan(folder, image, tuple(box))


# --- volume variants (written as .nrrd) ---------------------------------------------------------------------------

def _write(image: sitk.Image, folder: Path, name: str) -> Path:
    path = folder / f"{name}.nrrd"
    sitk.WriteImage(image, str(path))
    return path


def _resampled(image: sitk.Image, spacing: tuple[float, float, float], blur_mm: tuple[float, float, float]
               ) -> sitk.Image:
    """The same field of view on a grid of ``spacing``; blurred first where the new grid is coarser (a thicker slab
    or larger pixels average the anatomy), linearly interpolated."""
    smooth = sitk.Cast(image, sitk.sitkFloat32)
    for axis, sigma in enumerate(blur_mm):
        if sigma > 0:
            smooth = sitk.RecursiveGaussian(smooth, sigma, False, sitk.RecursiveGaussianImageFilter.ZeroOrder, axis)
    old_size, old_spacing = np.array(image.GetSize()), np.array(image.GetSpacing())
    size = [int(n) + 1 for n in (old_size - 1) * old_spacing / np.array(spacing) + 1e-6]  # no voxel outside
    out = sitk.Resample(smooth, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), spacing,
                        image.GetDirection(), -1024.0, sitk.sitkFloat32)
    return sitk.Cast(sitk.Round(out), sitk.sitkInt16)


def _blur_for(old: float, new: float) -> float:
    """Gaussian sigma (mm) that turns a profile of width ``old`` into one of ``new`` (FWHM in quadrature)."""
    return float(np.sqrt(max(new ** 2 - old ** 2, 0.0)) / 2.355)


def _slices_of(spacing_mm: float) -> Callable[[Scan, Path], Path]:
    def make(scan: Scan, folder: Path) -> Path:
        sx, sy, sz = scan.image.GetSpacing()
        return _write(_resampled(scan.image, (sx, sy, spacing_mm), (0, 0, _blur_for(sz, spacing_mm))), folder,
                      f"slices-{spacing_mm:g}mm")
    return make


def _pixels_of(pixel_mm: float) -> Callable[[Scan, Path], Path]:
    def make(scan: Scan, folder: Path) -> Path:
        sx, sy, sz = scan.image.GetSpacing()
        blur = _blur_for(sx, pixel_mm)
        return _write(_resampled(scan.image, (pixel_mm, pixel_mm, sz), (blur, blur, 0)), folder,
                      f"pixels-{pixel_mm:g}mm")
    return make


def _with_array(scan: Scan, array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(np.clip(np.round(array), -1024, 3071).astype(np.int16))
    image.CopyInformation(scan.image)
    return image


def _low_dose(scan: Scan, folder: Path) -> Path:
    hu = sitk.GetArrayFromImage(scan.image).astype(np.float32)
    noise = np.random.default_rng(0).standard_normal(hu.shape).astype(np.float32)
    noise = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(noise), [0.7, 0.7, 0.01]))
    hu += noise * (NOISE_SD_HU / noise.std())  # correlated within the slice, as reconstructed noise is
    return _write(_with_array(scan, hu), folder, "low-dose")


def _sharp_kernel(scan: Scan, folder: Path) -> Path:
    hu = sitk.Cast(scan.image, sitk.sitkFloat32)
    spacing = scan.image.GetSpacing()
    blurred = sitk.SmoothingRecursiveGaussian(hu, [spacing[0], spacing[1], 0.01])
    sharp = sitk.GetArrayFromImage(hu) + SHARPEN_AMOUNT * (sitk.GetArrayFromImage(hu) - sitk.GetArrayFromImage(blurred))
    return _write(_with_array(scan, sharp), folder, "sharp-kernel")


def _cut(scan: Scan, folder: Path, name: str, i=None, j=None, k=None) -> Path:
    size = scan.image.GetSize()
    ranges = [r if r is not None else (0, n) for r, n in zip((i, j, k), size)]
    region = scan.image[ranges[0][0]:ranges[0][1], ranges[1][0]:ranges[1][1], ranges[2][0]:ranges[2][1]]
    return _write(region, folder, name)


def _cut_lateral(scan: Scan, folder: Path) -> Path:
    (i0, i1), _, _ = scan.lung_box
    margin = int(CUT_FRACTION * (i1 - i0))
    return _cut(scan, folder, "fov-lateral", i=(i0 + margin, i1 - margin))


def _apex_end(scan: Scan) -> tuple[int, int, bool]:
    """The lungs' k range and whether k grows toward the head (the apex is at the high-k end)."""
    _, _, (k0, k1) = scan.lung_box
    direction = np.array(scan.image.GetDirection()).reshape(3, 3)
    return k0, k1, bool(direction[2, 2] > 0)  # LPS: +z is superior


def _cut_apex(scan: Scan, folder: Path) -> Path:
    k0, k1, apex_high = _apex_end(scan)
    cut = int(CUT_FRACTION * (k1 - k0))
    keep = (0, k1 - cut) if apex_high else (k0 + cut, scan.image.GetSize()[2])
    return _cut(scan, folder, "fov-apex", k=keep)


def _cut_bases(scan: Scan, folder: Path) -> Path:
    k0, k1, apex_high = _apex_end(scan)
    cut = int(CUT_FRACTION * (k1 - k0))
    keep = (k0 + cut, scan.image.GetSize()[2]) if apex_high else (0, k1 - cut)
    return _cut(scan, folder, "fov-bases", k=keep)


def _turned_array(scan: Scan) -> np.ndarray:
    return np.ascontiguousarray(sitk.GetArrayViewFromImage(scan.image)[:, ::-1, ::-1])


def _prone_dicom_header(scan: Scan, folder: Path) -> Path:
    """The body turned 180 degrees in the pixels, and a header that says so (as a scanner writes a prone series):
    physically the same patient."""
    image = sitk.GetImageFromArray(_turned_array(scan))
    direction = np.array(scan.image.GetDirection()).reshape(3, 3)
    image.SetDirection((direction @ np.diag([-1.0, -1.0, 1.0])).ravel().tolist())
    image.SetSpacing(scan.image.GetSpacing())
    nx, ny, _ = scan.image.GetSize()
    image.SetOrigin(scan.image.TransformIndexToPhysicalPoint((nx - 1, ny - 1, 0)))
    return _write(image, folder, "prone-patient-frame")


def _prone_scanner_frame(scan: Scan, folder: Path) -> Path:
    """The body turned 180 degrees in the pixels under the unaltered header (the scanner's frame)."""
    image = sitk.GetImageFromArray(_turned_array(scan))
    image.CopyInformation(scan.image)
    return _write(image, folder, "prone-scanner-frame")


# --- DICOM folder variants ----------------------------------------------------------------------------------------

def _copy_series(scan: Scan, folder: Path, name: str) -> tuple[Path, list[Path]]:
    target = folder / name
    target.mkdir()
    files = []
    for source in sorted(scan.folder.iterdir()):
        files.append(Path(shutil.copy2(source, target / source.name)))
    return target, files


def _by_position(files: list[Path]) -> list[Path]:
    return sorted(files, key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))


def _localizer(scan: Scan, like: Path, path: Path, same_series: bool) -> None:
    """A coronal projection image flagged LOCALIZER, written uncompressed beside the axial series."""
    ds = pydicom.dcmread(like)
    hu = sitk.GetArrayViewFromImage(scan.image).astype(np.float32)  # (k, j, i)
    projection = np.clip(hu.mean(axis=1)[::-1] + 1024, 0, 4095).astype(np.uint16)  # rows: head first
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    if not same_series:
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = generate_uid(), 1, "Topogram"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.Rows, ds.Columns = projection.shape
    ds.PixelRepresentation, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 0, 16, 12, 11
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = projection.tobytes()
    ds.save_as(path, enforce_file_format=True)


def _scout_separate(scan: Scan, folder: Path) -> Path:
    target, files = _copy_series(scan, folder, "scout-own-series")
    _localizer(scan, files[0], target / "scout.dcm", same_series=False)
    return target


def _scout_same_series(scan: Scan, folder: Path) -> Path:
    target, files = _copy_series(scan, folder, "scout-same-series")
    _localizer(scan, files[0], target / "scout.dcm", same_series=True)
    return target


def _two_series(scan: Scan, folder: Path) -> Path:
    """The series, and a shorter second series of the same study (a copy of its upper 60 slices)."""
    target, files = _copy_series(scan, folder, "two-series")
    uid = generate_uid()
    for index, source in enumerate(_by_position(files)[-60:]):
        ds = pydicom.dcmread(source)
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = uid, 7, "second reconstruction"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(target / f"second-{index:03d}.dcm")
    return target


def _missing_slice(scan: Scan, folder: Path) -> Path:
    target, files = _copy_series(scan, folder, "missing-slice")
    ordered = _by_position(files)
    ordered[len(ordered) // 2].unlink()
    return target


def _duplicate_copy(scan: Scan, folder: Path) -> Path:
    """One slice stored twice (same pixels, same position, a new instance UID), as a re-sent file ends up."""
    target, files = _copy_series(scan, folder, "duplicate-copy")
    source = _by_position(files)[len(files) // 2]
    ds = pydicom.dcmread(source)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(target / "resent-copy.dcm")
    return target


def _duplicate_conflict(scan: Scan, folder: Path) -> Path:
    """Two different slices claiming one position."""
    target, files = _copy_series(scan, folder, "duplicate-conflict")
    ordered = _by_position(files)
    middle = len(ordered) // 2
    ds = pydicom.dcmread(ordered[middle + 5])
    position = pydicom.dcmread(ordered[middle], stop_before_pixels=True)
    ds.ImagePositionPatient, ds.SliceLocation = position.ImagePositionPatient, position.get("SliceLocation")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(target / "conflict.dcm")
    return target


def _unsigned(scan: Scan, folder: Path) -> Path:
    """The series rewritten uncompressed as unsigned 16-bit pixels with RescaleIntercept -1024 (HU + 1024 stored)."""
    from LightSegLib.io import read_image

    target = folder / "unsigned-rescale"
    target.mkdir()
    loaded = read_image(scan.folder)
    hu = sitk.GetArrayViewFromImage(loaded.image)
    for k, source in enumerate(loaded.dicom_files):
        ds = pydicom.dcmread(source)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PixelRepresentation, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 0, 16, 16, 15
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (hu[k].astype(np.int32) + 1024).clip(0, 65535).astype(np.uint16).tobytes()
        ds.save_as(target / Path(source).name, enforce_file_format=True)
    return target


def _gantry_tilt(scan: Scan, folder: Path) -> Path:
    """The headers of a tilted acquisition: slice planes tilted about the left-right axis, their positions still
    stacked along the table (the long axis)."""
    target, files = _copy_series(scan, folder, "gantry-tilt")
    tilt = np.radians(TILT_DEG)
    for path in files:
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = [1, 0, 0, 0, float(np.cos(tilt)), float(-np.sin(tilt))]
        ds.GantryDetectorTilt = TILT_DEG
        ds.save_as(path)
    return target


VARIANTS: tuple[Variant, ...] = (
    Variant("fov-lateral", "field of view cut through both lungs laterally (central 60 % of their width)",
            _cut_lateral, lungs_whole=False),
    Variant("fov-apex", "field of view starting below the apices (upper 20 % of the lungs cut)", _cut_apex,
            lungs_whole=False),
    Variant("fov-bases", "field of view ending above the bases (lower 20 % of the lungs cut)", _cut_bases,
            lungs_whole=False),
    Variant("slices-5mm", "5 mm slices (resampled from 2 mm, slab-averaged)", _slices_of(5.0)),
    Variant("slices-1mm", "1 mm slices (interpolated from 2 mm)", _slices_of(1.0)),
    Variant("pixels-0.5mm", "0.5 mm pixels (interpolated from 0.75 mm)", _pixels_of(0.5)),
    Variant("pixels-1.5mm", "1.5 mm pixels (averaged from 0.75 mm)", _pixels_of(1.5)),
    Variant("low-dose", f"added noise, {NOISE_SD_HU:.0f} HU SD, correlated within the slice (low-dose look)",
            _low_dose),
    Variant("sharp-kernel", "edge-enhancing (lung/bone kernel) look: unsharp mask, 1 pixel, amount 1", _sharp_kernel),
    Variant("prone-patient-frame", "prone: body turned 180 degrees, header in the patient's frame (as DICOM writes it)",
            _prone_dicom_header),
    Variant("prone-scanner-frame", "prone: body turned 180 degrees, header unaware (scanner frame)",
            _prone_scanner_frame, turned_in_scanner_frame=True),
    Variant("scout-own-series", "DICOM folder: a localizer image in its own series beside the axial series",
            _scout_separate, note="chosen of 2 series by the rule"),
    Variant("scout-same-series", "DICOM folder: a localizer image inside the axial series", _scout_same_series,
            note="1 localizer or other-plane image(s) of the series left out"),
    Variant("two-series", "DICOM folder: two series of different lengths (148 and 60 slices)", _two_series,
            note="chosen of 2 series by the rule"),
    Variant("missing-slice", "DICOM folder: one slice missing in the middle (uneven spacing)", _missing_slice,
            expect="refuse", refusal="uneven slice spacing"),
    Variant("duplicate-copy", "DICOM folder: one slice stored twice (same pixels)", _duplicate_copy,
            note="1 exact duplicate slice file(s) left out"),
    Variant("duplicate-conflict", "DICOM folder: two different slices at one position", _duplicate_conflict,
            expect="refuse", refusal="two different slices at the same position"),
    Variant("unsigned-rescale", "DICOM folder: unsigned 16-bit pixels, rescale intercept -1024, uncompressed",
            _unsigned),
    Variant("gantry-tilt", f"DICOM folder: gantry tilted {TILT_DEG:g} degrees", _gantry_tilt, expect="refuse",
            refusal="gantry-tilted series"),
)


def reference_on_variant_grid(reference: sitk.Image, variant: Variant, variant_image: sitk.Image) -> np.ndarray:
    """The unaltered scan's labels on the variant's grid, (k, j, i); 255 where the unaltered scan has no voxel."""
    if variant.turned_in_scanner_frame:
        turned = sitk.GetImageFromArray(np.ascontiguousarray(sitk.GetArrayViewFromImage(reference)[:, ::-1, ::-1]))
        turned.CopyInformation(reference)
        reference = turned
    resampled = sitk.Resample(reference, variant_image, sitk.Transform(), sitk.sitkNearestNeighbor, 255,
                              reference.GetPixelID())
    return sitk.GetArrayFromImage(resampled)


def infection_dice(reference_labels: np.ndarray, variant_labels: np.ndarray, infection: int = 1) -> float:
    """Dice of infection on the voxels both scans cover (reference value 255 marks voxels it does not cover)."""
    covered = reference_labels != 255
    a = (reference_labels == infection) & covered
    b = (variant_labels == infection) & covered
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


@dataclass
class Outcome:
    """What LightSeg did with one variant, measured against the unaltered scan."""

    variant: Variant
    refused: str = ""  # the one-line message, when refused
    dice: float | None = None
    lung_ml_ratio: dict[str, float] | None = None  # variant / unaltered, per lung
    report: dict | None = None
    seconds: float = 0.0


def lung_volumes(report: dict) -> dict[str, float]:
    return {side: report["lungs"][side]["volume_ml"] for side in ("right", "left")}


def evaluate(variant: Variant, scan: Scan, reference: sitk.Image, reference_report: dict, segmenter, folder: Path
             ) -> Outcome:
    """Make the variant under ``folder``, segment it as ``lightseg segment`` does, and compare with the unaltered."""
    import time

    from LightSegLib.errors import LightSegError
    from LightSegLib.pipeline import SegmentRequest, segment_file

    source = variant.make(scan, folder)
    output = folder / f"{variant.name}-result.nrrd"
    start = time.perf_counter()
    try:
        outcome = segment_file(SegmentRequest(source, output), segmenter=segmenter)
    except LightSegError as error:
        return Outcome(variant, refused=str(error), seconds=time.perf_counter() - start)
    seconds = time.perf_counter() - start
    labels = sitk.GetArrayViewFromImage(outcome.result.labels)
    dice = infection_dice(reference_on_variant_grid(reference, variant, outcome.result.labels), labels)
    unaltered, measured = lung_volumes(reference_report), lung_volumes(outcome.report)
    ratio = {side: measured[side] / unaltered[side] for side in unaltered} if variant.lungs_whole else None
    return Outcome(variant, dice=dice, lung_ml_ratio=ratio, report=outcome.report, seconds=seconds)


def sides_on_grid(result) -> np.ndarray:
    """A segmentation's right (1) / left (2) lung labels in its image's (k, j, i) order."""
    return result.view.from_canonical(result.lungs.sides)
