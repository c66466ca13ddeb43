"""Training slices in memory: 2D image/mask folders, and the split into training and validation folds."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import LightSegError

if TYPE_CHECKING:
    from ..cards import HUWindow

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass
class SliceSet:
    """Images in [0, 1] and infection targets in [0, 1] (soft for pseudo-labels), each (H, W) float32."""

    images: list[np.ndarray] = field(default_factory=list)
    targets: list[np.ndarray] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: list[int] | np.ndarray) -> "SliceSet":
        return type(self)([self.images[i] for i in indices], [self.targets[i] for i in indices],
                          [self.names[i] for i in indices])

    def extend(self, other: "SliceSet") -> None:
        self.images += other.images
        self.targets += other.targets
        self.names += other.names

    def infection_fraction(self) -> float:
        return float(np.mean([t.mean() for t in self.targets])) if self.targets else 0.0

    def intensity_stats(self) -> tuple[float, float]:
        """Mean over images of each image's mean and std (the MiniSeg normalisation rule)."""
        return (float(np.mean([im.mean() for im in self.images])), float(np.mean([im.std() for im in self.images])))

    def as_tensors(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,C,S,S) images (C 1, or 3 with neighbour slices) and (N,1,S,S) targets, each resized (bilinear) to the
        network's square input."""
        images = torch.cat([_resize(im, size) for im in self.images])
        targets = torch.cat([_resize(t, size) for t in self.targets])
        return images, targets


def _resize(array: np.ndarray, size: int) -> torch.Tensor:
    """(H, W) or (C, H, W) -> (1, C, size, size)."""
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    t = t[None, None] if t.ndim == 2 else t[None]
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def read_gray(path: Path) -> np.ndarray:
    """An 8-bit (or 16-bit) image file as float32 gray values in [0, 1]."""
    try:
        with Image.open(path) as im:
            array = np.asarray(im.convert("L") if im.mode not in ("L", "I;16", "I") else im)
    except (OSError, ValueError) as exc:
        raise LightSegError(f"cannot read image ({exc})", path) from None
    scale = 65535.0 if array.dtype == np.uint16 else 255.0
    return array.astype(np.float32) / scale


def image_files(folder: Path) -> list[Path]:
    """The image files of a folder, in natural order of their names ("2" before "10")."""
    if not Path(folder).is_dir():
        raise LightSegError("not a folder", folder)
    return sorted((p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                  key=lambda p: (len(p.stem), p.stem))


def require_image_files(folder: Path) -> list[Path]:
    """``image_files`` of a folder that must hold at least one (unlabelled slices to label or to calibrate on)."""
    images = image_files(folder)
    if not images:
        raise LightSegError("no image files in the folder", folder)
    return images


def load_image_folders(images_dir: Path, masks_dir: Path, soft: bool = False) -> SliceSet:
    """Pairs ``images_dir/NAME.*`` with ``masks_dir/NAME.png``; masks > 127 are infection (kept soft if ``soft``)."""
    images = image_files(images_dir)
    masks = {p.stem: p for p in image_files(masks_dir)}
    result = SliceSet()
    for image_path in images:
        mask_path = masks.get(image_path.stem)
        if mask_path is None:
            continue
        image, mask = read_gray(image_path), read_gray(mask_path)
        if image.shape != mask.shape:
            raise LightSegError(f"mask size {mask.shape} differs from its image {image.shape}", mask_path)
        result.images.append(image)
        result.targets.append(mask if soft else (mask > 0.5).astype(np.float32))
        result.names.append(image_path.stem)
    if not result.images:
        raise LightSegError(f"no image with a mask of the same name in {masks_dir}", images_dir)
    return result


def split_fold(n: int, val_fraction: float, seed: int, fold: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of n items into (train, validation) index arrays; validation gets at least one.

    The seed's permutation is cut into consecutive validation blocks of the same size: ``fold`` picks one, so folds
    0, 1, ... of one seed are disjoint and, with ``val_fraction`` 1/k, the k folds cover every item once
    (cross-validation). Fold 0 is the split used without ``fold``.
    """
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    folds = n // n_val
    if not 0 <= fold < folds:
        raise LightSegError(f"validation fold {fold} does not exist: {n} slices make folds 0 to {folds - 1} "
                            f"of {n_val}")
    validation = order[fold * n_val:(fold + 1) * n_val]
    return np.sort(np.setdiff1d(order, validation)), np.sort(validation)


@dataclass
class VolumeSlices:
    """Slices cut from CT volumes as the engine cuts them, and a summary that names no file and holds no pixel."""

    slices: SliceSet
    summary: dict


def volume_slices(volume_paths: list[Path], label_paths: list[Path], window: HUWindow,
                  segment: str = "Infection") -> VolumeSlices:
    """Lung-cropped, windowed axial slices with their infection masks; only slices with lung are kept."""
    from ..io import infection_mask_on_grid, read_image
    from ..lung_crops import lung_crops

    result = SliceSet()
    notes: set[str] = set()
    for index, (volume_path, label_path) in enumerate(zip(volume_paths, label_paths)):
        loaded = read_image(volume_path)
        if loaded.is_2d:
            raise LightSegError("is a 2D image; volume training needs CT volumes", volume_path)
        mask, note = infection_mask_on_grid(label_path, loaded.image, segment)
        notes.add(note)
        scan = lung_crops(loaded.image)
        hu, crops = scan.hu, scan.crops
        infection = scan.view.to_canonical(mask)
        for z, (y0, y1, x0, x1) in zip(crops.slices, crops.boxes):
            values = (hu[z, y0:y1, x0:x1].astype(np.float32) - window.low) / window.width
            result.images.append(np.clip(values, 0, 1))
            result.targets.append(infection[z, y0:y1, x0:x1].astype(np.float32))
            result.names.append(f"volume{index}-slice{z}")
    infected = sum(bool(t.any()) for t in result.targets)
    summary = {"volumes": len(volume_paths), "slices_with_lung": len(result), "slices_with_infection": infected,
               "label_source": sorted(notes)}
    return VolumeSlices(result, summary)


def keep_clear_slices_in_proportion(data: SliceSet, max_clear_fraction: float, seed: int) -> SliceSet:
    """All slices with infection, plus slices without it up to ``max_clear_fraction`` of the result (seeded)."""
    infected = [i for i, t in enumerate(data.targets) if t.any()]
    clear = [i for i, t in enumerate(data.targets) if not t.any()]
    n_clear = min(len(clear), int(round(len(infected) * max_clear_fraction / (1 - max_clear_fraction))))
    chosen = np.random.default_rng(seed).choice(clear, n_clear, replace=False).tolist() if n_clear else []
    return data.subset(sorted(infected + chosen))
