"""From HU slices to network input: the HU window, and the affine maps between lung crop boxes and slices."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .cards import HUWindow


def window_to_unit(hu: torch.Tensor, window: HUWindow) -> torch.Tensor:
    """HU -> [0, 1] with the model's window (the training slices' 8-bit intensity domain, divided by 255)."""
    return ((hu - window.low) / window.width).clamp_(0, 1)


def crop_affines(boxes: np.ndarray, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 2, 3) thetas for ``affine_grid`` (align_corners=False): slice -> crop, and crop -> slice."""
    boxes = torch.as_tensor(boxes, dtype=torch.float64)
    sy = (boxes[:, 1] - boxes[:, 0]) / height
    cy = (boxes[:, 0] + boxes[:, 1]) / height - 1
    sx = (boxes[:, 3] - boxes[:, 2]) / width
    cx = (boxes[:, 2] + boxes[:, 3]) / width - 1
    zero = torch.zeros_like(sx)
    to_crop = torch.stack([torch.stack([sx, zero, cx], 1), torch.stack([zero, sy, cy], 1)], 1)
    to_slice = torch.stack([torch.stack([1 / sx, zero, -cx / sx], 1), torch.stack([zero, 1 / sy, -cy / sy], 1)], 1)
    return to_crop.float(), to_slice.float()


def restrict_to_window(theta: torch.Tensor, window: tuple[int, int, int, int], height: int, width: int
                       ) -> torch.Tensor:
    """Slice -> crop thetas re-expressed for an output grid covering only ``window`` = [y0, y1, x0, x1) of the slice."""
    y0, y1, x0, x1 = window
    scale_x, shift_x = (x1 - x0) / width, (x0 + x1) / width - 1
    scale_y, shift_y = (y1 - y0) / height, (y0 + y1) / height - 1
    out = theta.clone()  # the thetas are axis-aligned: theta[:, 0, 1] = theta[:, 1, 0] = 0
    out[:, 0, 0] = theta[:, 0, 0] * scale_x
    out[:, 0, 2] = theta[:, 0, 0] * shift_x + theta[:, 0, 2]
    out[:, 1, 1] = theta[:, 1, 1] * scale_y
    out[:, 1, 2] = theta[:, 1, 1] * shift_y + theta[:, 1, 2]
    return out


def crops_for_network(hu_slices: np.ndarray, to_crop: torch.Tensor, window: HUWindow, size: tuple[int, int],
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, H, W) HU slices -> (N, 1, *size) [0, 1] network inputs: windowed, then cropped to their lung boxes."""
    hu = torch.from_numpy(np.ascontiguousarray(hu_slices, dtype=np.float32))[:, None].to(device)
    return resample(window_to_unit(hu, window), to_crop, size, "border")


def neighbour_step(spacing_mm: float, neighbour_mm: float) -> int:
    """Slices between a slice and its neighbour channels: ``neighbour_mm`` in whole slices, at least 1 (0 if off)."""
    return max(1, round(neighbour_mm / spacing_mm)) if neighbour_mm > 0 else 0


def network_inputs(hu: np.ndarray, z: np.ndarray, to_crop: torch.Tensor, window: HUWindow, size: tuple[int, int],
                   step: int = 0, device: torch.device | str = "cpu") -> torch.Tensor:
    """Slices ``z`` of the (S, P, L) HU volume as (N, C, *size) network inputs: one channel (``step`` 0), or three:
    the slices ``step`` below, at and above each (clamped to the volume), all cut with that slice's crop box."""
    if not step:
        return crops_for_network(hu[z], to_crop, window, size, device)
    below, above = np.clip(z - step, 0, len(hu) - 1), np.clip(z + step, 0, len(hu) - 1)
    stacked = crops_for_network(hu[np.concatenate([below, z, above])], to_crop.repeat(3, 1, 1), window, size, device)
    return stacked[:, 0].view(3, len(z), *size).transpose(0, 1).contiguous()


def resample(x: torch.Tensor, theta: torch.Tensor, size: tuple[int, int], padding: str = "zeros") -> torch.Tensor:
    """Bilinear resampling of (N, C, H, W) through per-sample affines onto an output grid of ``size``."""
    theta = theta.to(x.device, x.dtype)
    if theta[:, 0, 1].any() or theta[:, 1, 0].any():
        grid = F.affine_grid(theta, [x.shape[0], x.shape[1], *size], align_corners=False)
    else:
        grid = axis_aligned_grid(theta, size)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def axis_aligned_grid(theta: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``affine_grid(theta, ..., align_corners=False)`` for thetas without rotation or shear (every crop's), bit for
    bit: x depends on the column only and y on the row only, so each is one row of values, broadcast. torch's
    ``affine_grid`` multiplies every grid point by a 3 x 2 matrix instead, 8x slower (0.17 s of P001's inference)."""
    height, width = size

    def base(steps: int) -> torch.Tensor:  # torch's own base grid for align_corners=False
        return torch.linspace(-1, 1, steps, dtype=theta.dtype, device=theta.device) * (steps - 1) / steps

    x = theta[:, 0, 0, None] * base(width)[None] + theta[:, 0, 2, None]
    y = theta[:, 1, 1, None] * base(height)[None] + theta[:, 1, 2, None]
    return torch.stack(torch.broadcast_tensors(x[:, None, :], y[:, :, None]), dim=-1)
