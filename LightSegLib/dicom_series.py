"""Choosing and checking the CT series of a DICOM input before its pixels are read.

A DICOM input is a series folder, a study or patient folder with the series in subfolders (as archives and TCIA
downloads lay them out), or a DICOMDIR (a CD/DVD export; given, or at the top of the folder). Archives hold more than
one clean axial series: localizer (scout) images, several reconstructions, copies of a file, a slice lost in transfer,
gantry-tilted acquisitions. Read from the headers alone (pydicom, no pixel decoding):

- localizers (ImageType LOCALIZER) and images of another orientation or size than most of their series are left out;
- the series for the lungs is chosen by a stated rule (``SERIES_RULE``), and the note names it and the others;
  ``wanted`` (``--series UID|NUMBER``) overrides the rule;
- slices are sorted along their normal; an exact copy of a slice (same position, same pixel data) is left out,
  two different slices at one position are refused;
- uneven spacing (a missing slice) and slices stacked off their normal (gantry tilt) are refused: a volume on a
  regular orthogonal grid cannot hold them without resampling, and a silent resampling would move every voxel of
  the result away from the source slices that a DICOM Segmentation references.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.fileset import FileSet
from pydicom.multival import MultiValue
from pydicom.errors import InvalidDicomError

from .errors import LightSegError

HEADER_TAGS = ["SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "ImageType", "ImageOrientationPatient",
               "ImagePositionPatient", "Rows", "Columns", "Modality", "ConvolutionKernel"]
SERIES_RULE = ("CT before other modalities, axial before other planes, the whole chest (at least 90 % of the longest "
               "axial CT's extent), the finest slice spacing, a lung or sharp kernel before a soft-tissue one, then "
               "the most slices")
WHOLE_EXTENT = 0.9
AXIAL_MIN_COSINE = 0.9  # the slice normal within about 25 degrees of the patient's long axis
SHARP_KERNEL_WORDS = ("LUNG", "BONE", "SHARP", "DETAIL", "EDGE", "HIGH")
SOFT_KERNEL_WORDS = ("SOFT", "STANDARD", "STND", "BODY", "SMOOTH", "MEDIASTIN", "BRAIN")
SPACING_TOLERANCE = 0.1  # of the usual gap: reconstructions jitter by hundredths of a millimetre
DUPLICATE_GAP_MM = 0.01
TILT_TOLERANCE_DEG = 0.5


@dataclass
class _Slice:
    path: str
    series_uid: str
    series_label: str
    is_localizer: bool
    orientation: tuple[float, ...]
    position: np.ndarray
    size: tuple[int, int]
    number: str = ""
    modality: str = ""
    kernel: str = ""


@dataclass
class SeriesChoice:
    """The files of the chosen series, ordered along the slice normal, and what was left out or noticed."""

    uid: str
    files: tuple[str, ...]
    notes: list[str] = field(default_factory=list)


def _read_header(path: Path) -> _Slice | None:
    """The header of one image file, or None for a file that is not a DICOM image (DICOMDIR, a report, a text file)."""
    with warnings.catch_warnings():  # pydicom warns (on access) about values that break the standard, such as UIDs
        warnings.simplefilter("ignore")
        try:
            return _slice_of(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=HEADER_TAGS), path)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            return None


def _slice_of(ds: pydicom.Dataset, path: Path) -> _Slice | None:
    if not all(hasattr(ds, name) for name in ("SeriesInstanceUID", "ImageOrientationPatient",
                                              "ImagePositionPatient", "Rows", "Columns")):
        return None
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    label = f"series {ds.get('SeriesNumber') or '?'}"
    if ds.get("SeriesDescription"):
        label += f" '{ds.SeriesDescription}'"
    kernel = ds.get("ConvolutionKernel") or ""
    kernel = "/".join(str(k) for k in kernel) if isinstance(kernel, (list, MultiValue)) else str(kernel)
    return _Slice(str(path), str(ds.SeriesInstanceUID), label, "LOCALIZER" in image_type,
                  tuple(round(float(v), 3) for v in ds.ImageOrientationPatient),
                  np.array([float(v) for v in ds.ImagePositionPatient]), (int(ds.Rows), int(ds.Columns)),
                  str(ds.get("SeriesNumber") or ""), str(ds.get("Modality") or "").upper(), kernel)


def _stack_of(slices: list[_Slice]) -> tuple[list[_Slice], int]:
    """The slices of a series that form its axial stack, and how many others (localizers, other planes) there were."""
    images = [s for s in slices if not s.is_localizer]
    if not images:
        return [], len(slices)
    common = Counter((s.orientation, s.size) for s in images).most_common(1)[0][0]
    stack = [s for s in images if (s.orientation, s.size) == common]
    return stack, len(slices) - len(stack)


def is_dicomdir(path: Path) -> bool:
    """A DICOMDIR file: the index of a CD/DVD export (the standard fixes its name)."""
    return path.is_file() and path.name.upper() == "DICOMDIR"


def dicom_files(source: Path) -> list[Path]:
    """The files of a DICOM input: the instances a DICOMDIR lists (``source`` itself, or one at the top of the
    folder), else every file of the folder and its subfolders (hidden ones left out)."""
    dicomdir = source if source.is_file() else source / "DICOMDIR"
    if is_dicomdir(dicomdir):
        try:
            return sorted(Path(instance.path) for instance in FileSet(pydicom.dcmread(dicomdir)))
        except (InvalidDicomError, OSError, ValueError, AttributeError, KeyError) as exc:
            raise LightSegError(f"cannot read the DICOMDIR ({type(exc).__name__}: {exc})", dicomdir) from None
    return sorted(p for p in source.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(source).parts))


def kernel_rank(kernel: str) -> int:
    """0 for a lung or sharp reconstruction kernel, 2 for a soft-tissue one, 1 when the name does not say. Siemens
    names (B70f, Br64, I50f) carry the sharpness as a number: 50 and above is sharp, 40 and below soft."""
    name = kernel.upper()
    if any(word in name for word in SHARP_KERNEL_WORDS):
        return 0
    if any(word in name for word in SOFT_KERNEL_WORDS):
        return 2
    numbered = re.match(r"^[A-Z]{1,2}(\d{2})", name)
    if numbered:
        sharpness = int(numbered.group(1))
        return 0 if sharpness >= 50 else 2 if sharpness <= 40 else 1
    return 1


@dataclass
class _Candidate:
    """A series' axial stack, summarised for the choice."""

    uid: str
    stack: list[_Slice]
    left_out: int
    is_ct: bool
    is_axial: bool
    extent_mm: float
    spacing_mm: float
    kernel: str

    @property
    def label(self) -> str:
        return self.stack[0].series_label if self.stack else "a series"

    def describe(self) -> str:
        kernel = f", kernel {self.kernel}" if self.kernel else ""
        return (f"{self.label}: {len(self.stack)} {'axial' if self.is_axial else 'non-axial'} "
                f"{'CT' if self.is_ct else 'non-CT'} slices, {self.extent_mm:.0f} mm, {self.spacing_mm:.2f} mm "
                f"apart{kernel}")


def _candidate(uid: str, slices: list[_Slice]) -> _Candidate:
    stack, left_out = _stack_of(slices)
    if not stack:
        return _Candidate(uid, stack, left_out, False, False, 0.0, 0.0, "")
    normal = _normal(stack[0].orientation)
    along = np.unique(np.round([float(s.position @ normal) for s in stack], 2))
    spacing = float(np.median(np.diff(along))) if along.size > 1 else 0.0
    return _Candidate(uid, stack, left_out, stack[0].modality in ("CT", ""), abs(normal[2]) >= AXIAL_MIN_COSINE,
                      float(along[-1] - along[0]), spacing, stack[0].kernel)


def _rule_key(candidate: _Candidate, whole_mm: float) -> tuple:
    """Smaller is better, in the order of SERIES_RULE."""
    return (not candidate.is_ct, not candidate.is_axial, candidate.extent_mm < WHOLE_EXTENT * whole_mm,
            round(candidate.spacing_mm, 1), kernel_rank(candidate.kernel), -len(candidate.stack), candidate.uid)


def choose_series(source: Path, wanted: str | None = None) -> SeriesChoice:
    """Pick the series for the lungs in a DICOM input (``wanted``: a SeriesInstanceUID or SeriesNumber, else by
    SERIES_RULE) and check that it is a regular grid; refuse with one line if not."""
    headers = [h for p in dicom_files(source) if (h := _read_header(p)) is not None]
    if not headers:
        raise LightSegError("folder holds no DICOM series", source)
    by_series: dict[str, list[_Slice]] = {}
    for header in headers:
        by_series.setdefault(header.series_uid, []).append(header)
    candidates = {uid: _candidate(uid, slices) for uid, slices in by_series.items()}
    if wanted is not None:
        matches = [c for c in candidates.values() if wanted in (c.uid, by_series[c.uid][0].number)]
        if len(matches) != 1:
            listed = "; ".join(f"{by_series[u][0].series_label} ({u})" for u in candidates)
            raise LightSegError(f"{'no' if not matches else 'more than one'} series {wanted!r} here "
                                f"(its series: {listed})", source)
        chosen, why = matches[0], f"as asked (--series {wanted})"
    else:
        usable = [c for c in candidates.values() if c.stack]
        if not usable:
            raise LightSegError("folder holds only localizer images, no axial series", source)
        whole = max((c.extent_mm for c in usable if c.is_ct and c.is_axial), default=0.0)
        chosen = min(usable, key=lambda c: _rule_key(c, whole))
        why = f"by the rule: {SERIES_RULE}" if len(candidates) > 1 else ""
    if not chosen.stack:
        raise LightSegError(f"{chosen.label} holds only localizer images, no axial series", source)
    ordered, duplicates = _ordered_stack(chosen.stack, source)
    notes = [f"DICOM {chosen.label} ({chosen.uid})", f"{len(ordered)} slices"]
    if chosen.left_out:
        notes.append(f"{chosen.left_out} localizer or other-plane image(s) of the series left out")
    if duplicates:
        notes.append(f"{duplicates} exact duplicate slice file(s) left out")
    others = [c.describe() + (f", {c.left_out} localizer or other-plane image(s)" if c.left_out else "")
              for c in candidates.values() if c is not chosen]
    if others:
        notes.append(f"chosen of {len(candidates)} series {why} ({chosen.describe()}; left out: {'; '.join(others)})")
    return SeriesChoice(chosen.uid, tuple(s.path for s in ordered), notes)


def _normal(orientation: tuple[float, ...]) -> np.ndarray:
    row, column = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row, column)
    return normal / np.linalg.norm(normal)


def _ordered_stack(stack: list[_Slice], folder: Path) -> tuple[list[_Slice], int]:
    """The slices sorted along their normal with exact copies dropped; uneven or tilted stacks are refused."""
    normal = _normal(stack[0].orientation)
    stack = sorted(stack, key=lambda s: float(s.position @ normal))
    kept, duplicates = [stack[0]], 0
    for current in stack[1:]:
        if abs(float((current.position - kept[-1].position) @ normal)) < DUPLICATE_GAP_MM:
            if not _same_pixels(current.path, kept[-1].path):
                raise LightSegError(f"two different slices at the same position {_where(current, normal)} "
                                    f"({Path(kept[-1].path).name}, {Path(current.path).name})", folder)
            duplicates += 1
            continue
        kept.append(current)
    if len(kept) < 3:
        return kept, duplicates
    positions = np.array([s.position for s in kept])
    along = positions @ normal
    gaps = np.diff(along)
    usual = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - usual)))
    if abs(gaps[worst] - usual) > SPACING_TOLERANCE * usual:
        raise LightSegError(f"uneven slice spacing: {gaps[worst]:.2f} mm between the slices at "
                            f"{_where(kept[worst], normal)} and {_where(kept[worst + 1], normal)} where the others are "
                            f"{usual:.2f} mm apart (a missing slice?); LightSeg does not resample over the gap",
                            folder)
    step = positions[-1] - positions[0]
    tilt = float(np.degrees(np.arccos(min(abs(step @ normal) / np.linalg.norm(step), 1.0))))
    if tilt > TILT_TOLERANCE_DEG:
        raise LightSegError(f"gantry-tilted series: the slices are stacked {tilt:.1f} degrees off their normal; "
                            "resample it to an orthogonal grid first (for example with 3D Slicer's DICOM import, "
                            "which regularizes the acquisition geometry)", folder)
    return kept, duplicates


def _where(item: _Slice, normal: np.ndarray) -> str:
    return f"{float(item.position @ normal):.1f} mm"


def _same_pixels(first: str, second: str) -> bool:
    """Whether two files hold the same pixel data, compared as stored (no decoding)."""
    def pixel_bytes(path: str) -> bytes | None:
        return pydicom.dcmread(path, specific_tags=["PixelData"]).get("PixelData")

    return pixel_bytes(first) == pixel_bytes(second)
