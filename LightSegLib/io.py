"""Reading CT volumes and 2D slices, writing label maps; geometry always copied from the input.

Inputs: NIfTI, NRRD, MetaImage, a DICOM series folder (its largest axial series, checked in dicom_series.py),
PNG/JPG slices.
Outputs: label maps as .nii.gz/.nii/.nrrd/.mha, Slicer .seg.nrrd with named coloured segments, PNG (2D only).
Every write goes to a temporary file that is renamed at the end, so a failure leaves no partial output.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicerio

from .dicom_series import SeriesChoice, choose_series, is_dicomdir
from .errors import LightSegError

# ITK prints warnings straight to stderr; LightSeg reports problems itself, one line each.
sitk.ProcessObject_SetGlobalWarningDisplay(False)

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LABEL_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".png")
ARRAY_SUFFIXES = (".npy",)
DICOM_SUFFIX = ".dcm"  # DICOM Segmentation / measurement report outputs (dicom_out.py), for DICOM series inputs

INFECTION, LUNG = 1, 2  # label values: 0 background, 1 infection, 2 lung without infection
# Both segments are coded from Slicer's "DICOM master list" terminology, which lists them (its General Anatomy list has
# no altered-structure type for infection): lung, and inflammation (the morphological change of infection) in the lung.
# The Slicer module, .seg.nrrd files and DICOM outputs use these same codes.
TERMINOLOGY_CONTEXT = "Segmentation category and type - DICOM master list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
LUNG_CODE = ["SCT", "39607008", "Lung"]


def _in_the_lung(segment_id: str, name: str, color: list[float], context: str, finding: list[str]) -> dict:
    """A segment of a Morphologically Altered Structure (``finding``) in the lung."""
    return {"id": segment_id, "name": name, "color": color,
            "terminology": {"contextName": context,
                            "category": ["SCT", "49755003", "Morphologically Altered Structure"],
                            "type": finding, "anatomicContextName": ANATOMIC_CONTEXT, "anatomicRegion": LUNG_CODE}}


SEGMENTS = (
    {"id": "Lungs", "name": "Lungs", "color": [0.77, 0.48, 0.42],
     "terminology": {"contextName": TERMINOLOGY_CONTEXT,
                     "category": ["SCT", "123037004", "Anatomical Structure"],
                     "type": LUNG_CODE}},
    _in_the_lung("Infection", "Infection", [0.95, 0.85, 0.15], TERMINOLOGY_CONTEXT,
                 ["SCT", "23583003", "Inflammation"]),
)
# The two patterns inside the infection (patterns/). Slicer's terminology lists have no entry for either (its DICOM
# master list's altered structures are mass, nodule, cyst, clot, embolus, edema, haemorrhage, inflammation, abscess,
# necrosis, neoplasms), so they carry DICOM's own codes: CID 6104 "Ground glass opacity" and SNOMED CT "Lung
# consolidation", under their own context name; Slicer stores and shows them, its list cannot offer them.
PATTERN_CONTEXT = "LightSeg lung patterns (DICOM CID 6104, SNOMED CT)"
PATTERN_SEGMENTS = (
    _in_the_lung("GroundGlass", "Ground-glass opacity", [0.55, 0.85, 0.35], PATTERN_CONTEXT,
                 ["DCM", "112120", "Ground glass opacity"]),
    _in_the_lung("Consolidation", "Consolidation", [0.85, 0.25, 0.2], PATTERN_CONTEXT,
                 ["SCT", "95436008", "Lung consolidation"]),
)


def segments_of(with_patterns: bool) -> tuple[dict, ...]:
    """The segments written for a result: Lungs and Infection, and the two patterns when there is a pattern map."""
    return SEGMENTS + (PATTERN_SEGMENTS if with_patterns else ())


def segment_masks(labels: np.ndarray, patterns: np.ndarray | None) -> dict[str, np.ndarray]:
    """Each segment's voxels by id, from the label map and the pattern map (0 none, 1 ground-glass, 2 consolidation);
    the lungs hold the infection and the infection holds both patterns."""
    masks = {"Lungs": labels > 0, "Infection": labels == INFECTION}
    if patterns is not None:
        masks["GroundGlass"] = patterns == 1
        masks["Consolidation"] = patterns == 2
    return masks


@dataclass
class LoadedImage:
    """An input image and what was learned while reading it."""

    image: sitk.Image
    path: Path
    is_2d: bool
    note: str = ""
    dicom_files: tuple[str, ...] = ()  # a DICOM series: its files, in the order of the image's slices


def suffix_of(path: Path) -> str:
    name = path.name.lower()
    for suffix in LABEL_SUFFIXES + VOLUME_SUFFIXES + IMAGE_SUFFIXES + ARRAY_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def is_dicom_input(path: Path) -> bool:
    """A folder (of a series, a study or a patient) or a DICOMDIR: read as DICOM."""
    return path.is_dir() or is_dicomdir(path)


def check_series_option(source: Path, wanted: str | None) -> None:
    """``--series`` chooses among a DICOM input's series: refused with one line for any other input."""
    if wanted is not None and source.exists() and not is_dicom_input(source):
        raise LightSegError("--series chooses among a DICOM input's series; this input is a single image", source)


def dicom_series(source: Path, wanted: str | None = None) -> SeriesChoice:
    """The series of a DICOM input for the lungs (``wanted``: a SeriesInstanceUID or SeriesNumber), from the headers
    alone; one-line error for an empty or unusable input."""
    if source.is_dir() and not any(not p.name.startswith(".") for p in source.iterdir()):
        raise LightSegError("folder is empty", source)
    return choose_series(source, wanted)


def _read_dicom_folder(folder: Path, series: SeriesChoice | None) -> tuple[sitk.Image, str, tuple[str, ...]]:
    series = series or dicom_series(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(series.files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise LightSegError(f"cannot read DICOM series {series.uid} ({_first_line(exc)})", folder) from None
    return image, "; ".join(series.notes), series.files


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if "ERROR" in line or "Exception" in line] or lines
    return (useful[-1] if useful else type(exc).__name__)[:200]


def read_image(path: str | Path, series: SeriesChoice | None = None) -> LoadedImage:
    """Read a CT volume (file or DICOM folder) or a 2D slice; bad input raises a one-line ``LightSegError``.

    ``series`` is ``dicom_series(path)`` when the caller has it already (parsing headers is Python work that holds
    the GIL; decoding the pixels is not).
    """
    path = Path(path)
    if not path.exists():
        raise LightSegError("no such file or folder", path)
    if is_dicom_input(path):
        image, note, files = _read_dicom_folder(path, series)
        return _checked(LoadedImage(image, path, False, note, files))
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError:
        raise LightSegError("cannot read as an image (unknown or damaged format)", path) from None
    is_2d = image.GetDimension() == 2
    if is_2d and image.GetNumberOfComponentsPerPixel() in (3, 4):
        image = _rgb_to_gray(image, path)
    return _checked(LoadedImage(image, path, is_2d))


def _rgb_to_gray(image: sitk.Image, path: Path) -> sitk.Image:
    rgb = sitk.GetArrayFromImage(image)[..., :3].astype(np.float32)
    if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])):
        raise LightSegError("is a colour image; LightSeg needs a grayscale CT slice", path)
    gray = sitk.GetImageFromArray(rgb[..., 0].astype(np.uint8))
    gray.CopyInformation(image)
    return gray


def _checked(loaded: LoadedImage) -> LoadedImage:
    image, path = loaded.image, loaded.path
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise LightSegError(f"has {image.GetNumberOfComponentsPerPixel()} components per pixel; "
                            "LightSeg needs a single-channel CT image", path)
    dimension = image.GetDimension()
    if dimension == 4:
        raise LightSegError("is a 4D image; LightSeg needs one 3D CT volume", path)
    if dimension == 3 and image.GetSize()[2] == 1:
        loaded.is_2d = False  # a single-slice volume keeps its HU handling
    if dimension not in (2, 3):
        raise LightSegError(f"is {dimension}D; LightSeg needs a 3D CT volume or a 2D slice", path)
    if not loaded.is_2d:
        check_ct_intensities(image, path)
    return loaded


def check_ct_intensities(image: sitk.Image, path: Path) -> None:
    """Reject volumes whose values cannot be Hounsfield units of a chest CT (no air near -1000 HU)."""
    values = sitk.GetArrayViewFromImage(image)
    sample = values[:: max(1, values.shape[0] // 16), ::4, ::4]
    low = float(np.percentile(sample, 1))
    if low > -500 or low < -3100:
        raise LightSegError(f"intensities do not look like CT in Hounsfield units (1st percentile {low:.0f}; "
                            "a chest CT has air near -1000 HU)", path)


def check_output_path(path: Path, allowed: tuple[str, ...], force: bool) -> None:
    """Fail before any work if the output exists (without ``force``), has an unknown type, or cannot be created."""
    if suffix_of(path) not in allowed:
        raise LightSegError(f"unsupported output type (use one of {', '.join(allowed)})", path)
    if path.exists() and not force:
        raise LightSegError("output exists (use --force to overwrite it)", path)
    if not path.parent.exists():
        raise LightSegError("output folder does not exist", path.parent)


def _atomic_target(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix_of(path), dir=path.parent)
    os.close(fd)
    return Path(tmp)


def remove_stale_temporaries(path: Path) -> None:
    """Delete the temporary files that a killed ``write_atomically`` of ``path`` left beside it."""
    if path.parent.is_dir():
        for stale in path.parent.glob(f".{path.name}.*"):
            stale.unlink(missing_ok=True)


def write_atomically(path: Path, writer) -> None:
    """Call ``writer(tmp_path)`` and move the result to ``path`` only if it succeeded."""
    tmp = _atomic_target(path)
    try:
        writer(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_labels(labels: sitk.Image, path: str | Path, patterns: sitk.Image | None = None) -> None:
    """Write a label map (0 background, 1 infection, 2 lung) in the format the suffix names; a .seg.nrrd also gets
    the ground-glass and consolidation segments of ``patterns`` when given."""
    path = Path(path)
    suffix = suffix_of(path)
    if suffix == ".seg.nrrd":
        write_atomically(path, lambda tmp: _write_seg_nrrd(labels, tmp, patterns))
    elif suffix == ".png":
        if labels.GetDimension() != 2:
            raise LightSegError("PNG output is for 2D slices; use .nii.gz, .nrrd or .seg.nrrd for volumes", path)
        png = sitk.GetImageFromArray(((sitk.GetArrayViewFromImage(labels) == INFECTION) * 255).astype(np.uint8))
        write_atomically(path, lambda tmp: sitk.WriteImage(png, str(tmp)))
    else:
        write_atomically(path, lambda tmp: sitk.WriteImage(labels, str(tmp), useCompression=True))


def write_pattern_map(patterns: sitk.Image, path: Path) -> None:
    """The pattern map (values 0 none, 1 ground-glass, 2 consolidation) on the input's grid, as an image file (an
    8-bit PNG for a 2D slice)."""
    if suffix_of(path) == ".png":
        png = sitk.GetImageFromArray(sitk.GetArrayFromImage(patterns))  # without the slice's spacing, as PNG holds
        write_atomically(path, lambda tmp: sitk.WriteImage(png, str(tmp)))
    else:
        write_atomically(path, lambda tmp: sitk.WriteImage(patterns, str(tmp), useCompression=True))


def ijk_to_lps(image: sitk.Image) -> np.ndarray:
    """4x4 matrix from voxel index (i, j, k) to LPS millimetres."""
    matrix = np.eye(4)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    matrix[:3, :3] = direction * np.array(image.GetSpacing())[None, :]
    matrix[:3, 3] = image.GetOrigin()
    return matrix


def _write_seg_nrrd(labels: sitk.Image, path: Path, patterns: sitk.Image | None = None) -> None:
    """Lungs, Infection (and the patterns) as overlapping segments, one layer each (the lungs hold the infection)."""
    if labels.GetDimension() != 3:
        raise LightSegError(".seg.nrrd output is for volumes", path)
    array = sitk.GetArrayViewFromImage(labels)  # (k, j, i)
    pattern_array = None if patterns is None else sitk.GetArrayViewFromImage(patterns)
    specs = segments_of(patterns is not None)
    masks = segment_masks(array, pattern_array)
    # Built as (k, j, i, layer) so that the (layer, i, j, k) view slicerio writes in Fortran order is contiguous
    # (no 75 MB transpose on a 512 x 512 x 148 CT).
    layers = np.empty(array.shape + (len(specs),), np.uint8)
    for layer, segment in enumerate(specs):
        layers[..., layer] = masks[segment["id"]]
    voxels = layers.transpose(3, 2, 1, 0)
    segments = [dict(segment, labelValue=1, layer=layer, extent=_extent(layers[..., layer]))
                for layer, segment in enumerate(specs)]
    segmentation = {"voxels": voxels, "ijkToLPS": ijk_to_lps(labels), "segments": segments}
    # zlib level 1: about a tenth of the time of the default level 9, for files a little larger
    slicerio.write_segmentation(str(path), segmentation, compression_level=1)


def _extent(mask_kji: np.ndarray) -> list[int]:
    """[i0, i1, j0, j1, k0, k1] of a (k, j, i) mask's voxels, inclusive; [0, -1, ...] when empty (Slicer's rule)."""
    extent = []
    for axis in (2, 1, 0):
        hits = np.flatnonzero(mask_kji.any(axis=tuple(a for a in range(3) if a != axis)))
        extent += [int(hits[0]), int(hits[-1])] if hits.size else [0, -1]
    return extent


def _strip_suffix(path: Path) -> str:
    """``case1.seg.nrrd`` -> ``case1``; a DICOM folder keeps its name."""
    suffix = suffix_of(path)
    return path.name[: -len(suffix)] if suffix and path.name.lower().endswith(suffix) else path.name


def pair_by_name(first_dir: Path, second_dir: Path) -> list[tuple[Path, Path]]:
    """Files (or DICOM folders) of ``first_dir`` paired with files of ``second_dir`` that have the same base name."""
    for d in (first_dir, second_dir):
        if not Path(d).is_dir():
            raise LightSegError("not a folder", d)
    seconds = {_strip_suffix(p): p for p in Path(second_dir).iterdir() if not p.name.startswith(".")}
    pairs = [(p, seconds[_strip_suffix(p)]) for p in sorted(Path(first_dir).iterdir())
             if not p.name.startswith(".") and _strip_suffix(p) in seconds]
    if not pairs:
        raise LightSegError(f"no file has a partner of the same name in {second_dir}", first_dir)
    return pairs


def infection_mask_on_grid(label_path: Path, reference: sitk.Image, segment: str = "Infection"
                           ) -> tuple[np.ndarray, str]:
    """The infection mask of a label file resampled (nearest) onto ``reference``'s grid, in (k, j, i) order.

    Label maps: value 1 is infection (0/1 masks, and 0/1/2 LightSeg label maps). ``.seg.nrrd``: the segment whose name
    matches ``segment`` (case-insensitive, first match), whatever its layer and label value. Returns the mask and a
    note saying what was used.
    """
    label_path = Path(label_path)
    try:
        if suffix_of(label_path) == ".seg.nrrd":
            segmentation = slicerio.read_segmentation(str(label_path))
            names = slicerio.segment_names(segmentation)
            chosen = next((n for n in names if segment.lower() in n.lower()), None)
            if chosen is None:
                raise LightSegError(f"has no segment named like {segment!r} (segments: {', '.join(names)})",
                                    label_path)
            mask_ijk = slicerio.segment_mask(segmentation, slicerio.segment_from_name(segmentation, chosen))
            label = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(mask_ijk, (2, 1, 0)).astype(np.uint8)))
            matrix = np.asarray(segmentation["ijkToLPS"], float)
            spacing = np.linalg.norm(matrix[:3, :3], axis=0)
            label.SetSpacing(spacing.tolist())
            label.SetDirection((matrix[:3, :3] / spacing).ravel().tolist())
            label.SetOrigin(matrix[:3, 3].tolist())
            note = f"segment {chosen!r}"
        else:
            label = sitk.ReadImage(str(label_path))
            values = np.unique(sitk.GetArrayViewFromImage(label))
            if not set(values.tolist()) <= {0, 1, 2}:
                raise LightSegError(f"unexpected label values {values[:6].tolist()} (expected 0/1 or 0/1/2, "
                                    "1 = infection)", label_path)
            label = sitk.Cast(label == INFECTION, sitk.sitkUInt8)
            note = "label value 1"
    except RuntimeError:
        raise LightSegError("cannot read as a label map", label_path) from None
    if label.GetDimension() != reference.GetDimension():
        raise LightSegError(f"label is {label.GetDimension()}D but its volume is {reference.GetDimension()}D",
                            label_path)
    same_grid = (label.GetSize() == reference.GetSize()
                 and np.allclose(label.GetOrigin(), reference.GetOrigin(), atol=1e-3)
                 and np.allclose(label.GetSpacing(), reference.GetSpacing(), atol=1e-4)
                 and np.allclose(label.GetDirection(), reference.GetDirection(), atol=1e-4))
    if not same_grid:
        if not _overlaps(label, reference):
            raise LightSegError("label does not overlap its volume in physical space (geometry mismatch)", label_path)
        label = sitk.Resample(label, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        note += ", resampled onto the volume grid"
    return sitk.GetArrayFromImage(label).astype(bool), note


def _overlaps(a: sitk.Image, b: sitk.Image) -> bool:
    def box(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
        corners = np.array([image.TransformContinuousIndexToPhysicalPoint(
            [(s - 0.5) if bit else -0.5 for s, bit in zip(image.GetSize(), bits)])
            for bits in np.ndindex(*(2,) * image.GetDimension())])
        return corners.min(0), corners.max(0)

    (a_lo, a_hi), (b_lo, b_hi) = box(a), box(b)
    return bool(np.all(a_lo < b_hi) and np.all(b_lo < a_hi))
