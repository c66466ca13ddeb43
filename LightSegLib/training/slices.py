"""Training slices in memory: 2D image/mask folders, and the split into training and validation folds."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import LightSegError

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
        return SliceSet([self.images[i] for i in indices], [self.targets[i] for i in indices],
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
        """(N,1,S,S) images and (N,1,S,S) targets, each resized (bilinear) to the network's square input."""
        images = torch.cat([_resize(im, size) for im in self.images])
        targets = torch.cat([_resize(t, size) for t in self.targets])
        return images, targets


def _resize(array: np.ndarray, size: int) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
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


def load_image_folders(images_dir: Path, masks_dir: Path, soft: bool = False) -> SliceSet:
    """Pairs ``images_dir/NAME.*`` with ``masks_dir/NAME.png``; masks > 127 are infection (kept soft if ``soft``)."""
    for d in (images_dir, masks_dir):
        if not Path(d).is_dir():
            raise LightSegError("not a folder", d)
    masks = {p.stem: p for p in Path(masks_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    images = sorted((p for p in Path(images_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                    key=lambda p: (len(p.stem), p.stem))
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


def split_fold(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of n items into (train, validation) index arrays; validation gets at least one."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])
