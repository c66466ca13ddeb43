"""Choosing and checking the CT series of a DICOM folder before its pixels are read.

Archives hold more than one clean axial series: localizer (scout) images, several reconstructions, copies of a file,
a slice lost in transfer, gantry-tilted acquisitions. Read from the headers alone (pydicom, no pixel decoding):

- localizers (ImageType LOCALIZER) and images of another orientation or size than most of their series are left out;
- the series with the most slices is taken, and the note names the others;
- slices are sorted along their normal; an exact copy of a slice (same position, same pixel data) is left out,
  two different slices at one position are refused;
- uneven spacing (a missing slice) and slices stacked off their normal (gantry tilt) are refused: a volume on a
  regular orthogonal grid cannot hold them without resampling, and a silent resampling would move every voxel of
  the result away from the source slices that a DICOM Segmentation references.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from .errors import LightSegError

HEADER_TAGS = ["SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "ImageType", "ImageOrientationPatient",
               "ImagePositionPatient", "Rows", "Columns"]
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
    return _Slice(str(path), str(ds.SeriesInstanceUID), label, "LOCALIZER" in image_type,
                  tuple(round(float(v), 3) for v in ds.ImageOrientationPatient),
                  np.array([float(v) for v in ds.ImagePositionPatient]), (int(ds.Rows), int(ds.Columns)))


def _stack_of(slices: list[_Slice]) -> tuple[list[_Slice], int]:
    """The slices of a series that form its axial stack, and how many others (localizers, other planes) there were."""
    images = [s for s in slices if not s.is_localizer]
    if not images:
        return [], len(slices)
    common = Counter((s.orientation, s.size) for s in images).most_common(1)[0][0]
    stack = [s for s in images if (s.orientation, s.size) == common]
    return stack, len(slices) - len(stack)


def choose_series(folder: Path) -> SeriesChoice:
    """Pick the largest axial stack in ``folder`` and check that it is a regular grid; refuse with one line if not."""
    headers = [h for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")
               if (h := _read_header(p)) is not None]
    if not headers:
        raise LightSegError("folder holds no DICOM series", folder)
    by_series: dict[str, list[_Slice]] = {}
    for header in headers:
        by_series.setdefault(header.series_uid, []).append(header)
    stacks = {uid: _stack_of(slices) for uid, slices in by_series.items()}
    uid = max(stacks, key=lambda u: len(stacks[u][0]))
    stack, left_out = stacks[uid]
    if not stack:
        raise LightSegError("folder holds only localizer images, no axial series", folder)
    ordered, duplicates = _ordered_stack(stack, folder)
    notes = [f"DICOM {stack[0].series_label} ({uid})", f"{len(ordered)} slices"]
    if left_out:
        notes.append(f"{left_out} localizer or other-plane image(s) of the series left out")
    if duplicates:
        notes.append(f"{duplicates} exact duplicate slice file(s) left out")
    others = [f"{by_series[u][0].series_label}: {len(stacks[u][0])} axial slices"
              + (f", {stacks[u][1]} localizer or other-plane image(s)" if stacks[u][1] else "")
              for u in stacks if u != uid]
    if others:
        notes.append(f"the longest of {len(stacks)} series (left out: {'; '.join(others)})")
    return SeriesChoice(uid, tuple(s.path for s in ordered), notes)


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
