"""Training slices cut from CT volumes in Hounsfield units exactly as the engine cuts them.

Each slice with lung goes through the engine's own lung mask, crop box, HU window and bilinear resampling to the
network's input size (``preprocess.lung_crops`` and ``crops_for_network``), so a network trained on them sees what it
sees at inference. Two kinds of CT give targets without anyone drawing:

- a CT without infection (a normal chest, nodules, a tumour): every lung slice's target is "no infection". Slices
  within ``LESION_MARGIN_MM`` of an annotated lesion (``NAME_lesions.*`` beside the CT, 1 = lesion) are left out: a
  nodule or tumour is a dense opacity that the infection outlines of the 2D training slices would include as
  consolidation, so calling it "no infection" would teach the network to miss consolidation;
- a CT with radiologists' slice labels (``NAME_slice_labels.csv`` beside it, as COVID-CT-MD lays them out): a slice
  labelled clear is "no infection"; a slice labelled infected gets a teacher model's infection probability where the
  teacher's 3D-cleaned label map calls infection; it is left out without a teacher (``--infected-slices skip``) or
  where the teacher calls nothing on it (an empty target would teach "no infection" where the radiologists saw some).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import SimpleITK as sitk
import torch

from ..errors import LightSegError
from ..geometry import axial_positions
from ..io import INFECTION, VOLUME_SUFFIXES, read_image, suffix_of
from ..lung_crops import LungCrops, lung_crops
from ..preprocess import crop_affines, neighbour_step, network_inputs, resample
from .slices import SliceSet

if TYPE_CHECKING:
    from ..cards import HUWindow
    from ..engine import Segmenter

LESION_MARGIN_MM = 10.0  # slices this close (along the body axis) to an annotated lesion are left out
LESIONS_SUFFIX = "_lesions"
SLICE_LABELS_SUFFIX = "_slice_labels.csv"
BATCH = 16  # slices resampled at a time (bounded memory)


@dataclass
class CTSlices:
    """Network-sized slices and their targets, and a summary that counts (names no file, holds no pixel)."""

    slices: SliceSet
    summary: dict


def ct_inputs(folder: Path) -> list[Path]:
    """The CTs of a folder: volume files and DICOM series folders, not the lesion files or label CSVs beside them."""
    if not Path(folder).is_dir():
        raise LightSegError("not a folder", folder)
    found = [p for p in sorted(Path(folder).iterdir()) if not p.name.startswith(".")
             and (p.is_dir() or suffix_of(p) in VOLUME_SUFFIXES) and not ct_name(p).endswith(LESIONS_SUFFIX)]
    if not found:
        raise LightSegError("no CT volumes or DICOM folders in this folder", folder)
    return found


def ct_name(path: Path) -> str:
    """A CT's name: its DICOM folder's name, or its file name without the volume suffix (how benchmarks name cases)."""
    suffix = suffix_of(path) if path.is_file() else ""
    return path.name[: len(path.name) - len(suffix)] if suffix else path.name


def lesion_file(ct: Path) -> Path | None:
    """``NAME_lesions.<volume suffix>`` beside the CT ``NAME``, if there is one."""
    for suffix in VOLUME_SUFFIXES:
        candidate = ct.parent / f"{ct_name(ct)}{LESIONS_SUFFIX}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def read_scan(path: Path) -> tuple[sitk.Image, LungCrops]:
    """A CT volume and the engine's view of it; a 2D image, a non-CT or a lung-less volume is one line naming it."""
    loaded = read_image(path)
    if loaded.is_2d:
        raise LightSegError("is a 2D image; a CT volume is needed here", path)
    scan = lung_crops(loaded.image)
    if len(scan.crops.slices) == 0:
        raise LightSegError("no lungs found in this CT", path)
    return loaded.image, scan


def _lung_slice_batches(scan: LungCrops) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """(canonical slice indices, their crop affines) of the scan's lung slices, BATCH at a time."""
    height, width = scan.hu.shape[1:]
    to_crop, _ = crop_affines(scan.crops.boxes, height, width)
    for start in range(0, len(scan.crops.slices), BATCH):
        yield scan.crops.slices[start:start + BATCH], to_crop[start:start + BATCH]


def network_slices(scan: LungCrops, window: HUWindow, size: tuple[int, int], neighbour_mm: float = 0.0
                   ) -> np.ndarray:
    """Float32 network inputs in [0, 1] of every lung slice, as the engine makes them: (N, H, W), or (N, 3, H, W)
    with the neighbour slices ``neighbour_mm`` below and above as the outer channels."""
    step = neighbour_step(scan.view.spacing[0], neighbour_mm)
    inputs = np.concatenate([network_inputs(scan.hu, z, theta, window, size, step).numpy()
                             for z, theta in _lung_slice_batches(scan)])
    return inputs if step else inputs[:, 0]


def network_targets(scan: LungCrops, canonical: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A canonical (S, P, L) float map cut and resampled to the lung slices' network grids (bilinear, zero outside)."""
    return np.concatenate([
        resample(torch.from_numpy(np.ascontiguousarray(canonical[z], dtype=np.float32))[:, None], theta, size)[:, 0]
        .numpy() for z, theta in _lung_slice_batches(scan)])


def read_lesions(lesions_path: Path, image: sitk.Image) -> np.ndarray:
    """A lesion file (nonzero = lesion) resampled onto the CT's grid by physical position: a boolean array in
    SimpleITK order; an unreadable or non-3D file is one line naming it."""
    try:
        lesions = sitk.ReadImage(str(lesions_path))
    except RuntimeError:
        raise LightSegError("cannot read as a lesion mask", lesions_path) from None
    if lesions.GetDimension() != 3:
        raise LightSegError("lesion mask is not a 3D image", lesions_path)
    lesions = sitk.Resample(lesions, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(lesions) > 0


def near_lesion_slices(image: sitk.Image, scan: LungCrops, lesions_path: Path, margin_mm: float) -> np.ndarray:
    """Boolean per canonical slice: within ``margin_mm`` of a voxel of the lesion file (resampled onto the CT)."""
    canonical = scan.view.to_canonical(read_lesions(lesions_path, image))
    with_lesion = canonical.any(axis=(1, 2))
    positions = axial_positions(image, scan.view)
    if not with_lesion.any():
        return np.zeros(len(positions), bool)
    distance = np.abs(positions[:, None] - positions[with_lesion][None, :]).min(axis=1)
    return distance <= margin_mm


def negative_ct_slices(paths: list[Path], window: HUWindow, size: tuple[int, int],
                       margin_mm: float = LESION_MARGIN_MM, neighbour_mm: float = 0.0) -> CTSlices:
    """Every lung slice of CTs without infection, target 0, less the slices near annotated lesions."""
    result = SliceSet()
    left_out = 0
    for index, path in enumerate(paths):
        image, scan = read_scan(path)
        keep = np.ones(len(scan.crops.slices), bool)
        lesions = lesion_file(path)
        if lesions is not None:
            keep = ~near_lesion_slices(image, scan, lesions, margin_mm)[scan.crops.slices]
            left_out += int((~keep).sum())
        inputs = network_slices(scan, window, size, neighbour_mm)
        for z, x in zip(scan.crops.slices[keep], inputs[keep]):
            result.images.append(x)
            result.targets.append(np.zeros(size, np.float32))
            result.names.append(f"negative{index}-slice{z}")
    summary = {"volumes": len(paths), "slices": len(result), "slices_near_lesions_left_out": left_out,
               "lesion_margin_mm": margin_mm}
    return CTSlices(result, summary)


def slice_labelled_ct_slices(paths: list[Path], window: HUWindow, size: tuple[int, int],
                             teacher: Segmenter | None, neighbour_mm: float = 0.0) -> CTSlices:
    """Lung slices of CTs with slice labels: clear ones target 0; infected ones the teacher's cleaned probability
    (``teacher`` None: infected slices are left out)."""
    from ..evaluation import read_slice_labels

    result = SliceSet()
    counts = {"clear": 0, "infected": 0, "infected_left_out": 0}
    for index, path in enumerate(paths):
        labels_csv = path.parent / f"{ct_name(path)}{SLICE_LABELS_SUFFIX}"
        if not labels_csv.is_file():
            raise LightSegError(f"has no slice labels beside it ({labels_csv.name})", path)
        locations, visible = read_slice_labels(labels_csv)
        image, scan = read_scan(path)
        positions = axial_positions(image, scan.view)[scan.crops.slices]
        nearest = np.abs(positions[:, None] - locations[None, :]).argmin(axis=1)
        infected = visible[nearest]
        inputs = network_slices(scan, window, size, neighbour_mm)
        targets = np.zeros((len(inputs), *size), np.float32)
        if teacher is not None and infected.any():
            targets = _teacher_targets(teacher, image, scan, size)
        for i, (z, x) in enumerate(zip(scan.crops.slices, inputs)):
            if infected[i] and (teacher is None or not targets[i].any()):
                counts["infected_left_out"] += 1
                continue
            counts["infected" if infected[i] else "clear"] += 1
            result.images.append(x)
            result.targets.append(targets[i] if infected[i] else np.zeros(size, np.float32))
            result.names.append(f"labelled{index}-slice{z}")
    summary = {"volumes": len(paths), "slices": len(result), "clear_slices": counts["clear"],
               "infected_slices": counts["infected"], "infected_slices_left_out": counts["infected_left_out"],
               "infected_slice_targets": None if teacher is None else
               {"teacher": teacher.card.id, "version": teacher.card.version, "sha256": teacher.card.weights_sha256,
                "rule": "the teacher's infection probability where its 3D-cleaned label map calls infection; "
                        "infected slices where it calls none are left out"}}
    return CTSlices(result, summary)


def _teacher_targets(teacher: Segmenter, image: sitk.Image, scan: LungCrops, size: tuple[int, int]) -> np.ndarray:
    """The teacher's probability, kept where its cleaned label map is infection, on the lung slices' network grids."""
    probabilities = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.float32)
    result = teacher.segment_volume(image, probabilities=probabilities)
    if result.view != scan.view:
        raise LightSegError("the teacher's view of the CT differs from the training view", image)
    labels = result.view.to_canonical(sitk.GetArrayViewFromImage(result.labels))
    kept = np.where(labels == INFECTION, result.view.to_canonical(probabilities), 0.0)
    return network_targets(scan, kept, size)
