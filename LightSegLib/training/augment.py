"""Batched augmentation of CT slices on the training device, drawn from a seeded generator.

Geometry: quarter turns and flips (the public training slices come in several orientations), small rotations and
scales, crop jitter. Intensity: window, gamma, blur/sharpen and noise jitter so models survive other scanners,
reconstruction kernels and HU windows; optionally, fainter lesions (contrast reduced about each slice's median, which
is lung parenchyma on a lung-cropped slice).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    max_rotation_deg: float = 15.0
    scale_range: tuple[float, float] = (0.85, 1.2)
    max_shift: float = 0.08
    quarter_turns: bool = True
    window_jitter: float = 0.1
    gamma_range: tuple[float, float] = (0.7, 1.5)
    blur_probability: float = 0.3
    sharpen_probability: float = 0.15
    noise_probability: float = 0.5
    max_noise: float = 0.04
    min_contrast: float = 1.0  # contrast factor drawn from [min_contrast, 1] per slice; 1 is off (no draw made)


def _uniform(n: int, low: float, high: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen, device=device)


def geometric(images: torch.Tensor, targets: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """One random affine per sample (rotation, scale, flip, shift), applied to image and target alike."""
    n, device = images.shape[0], images.device
    angle = _uniform(n, -cfg.max_rotation_deg, cfg.max_rotation_deg, gen, device) * math.pi / 180
    if cfg.quarter_turns:
        angle = angle + torch.randint(0, 4, (n,), generator=gen, device=device) * (math.pi / 2)
    scale = torch.exp(_uniform(n, math.log(cfg.scale_range[0]), math.log(cfg.scale_range[1]), gen, device))
    flip = torch.where(torch.rand(n, generator=gen, device=device) < 0.5, -1.0, 1.0)
    shift = _uniform(2 * n, -cfg.max_shift, cfg.max_shift, gen, device).view(n, 2) * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    targets = F.grid_sample(targets, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return images, targets


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per sample (grouped convolution)."""
    n, c, h, w = x.shape
    radius = 3
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernels = torch.exp(-(offsets[None] ** 2) / (2 * sigma[:, None] ** 2))
    kernels = kernels / kernels.sum(1, keepdim=True)
    kernels = kernels.repeat_interleave(c, 0)  # each sample's sigma for each of its channels
    flat = x.reshape(1, n * c, h, w)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), kernels.view(n * c, 1, 1, -1),
                    groups=n * c)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), kernels.view(n * c, 1, -1, 1),
                    groups=n * c)
    return flat.view(n, c, h, w)


def reduce_contrast(images: torch.Tensor, min_contrast: float, gen: torch.Generator) -> torch.Tensor:
    """Scale each slice's deviations from its median by a factor drawn from [min_contrast, 1]."""
    n = images.shape[0]
    median = images.flatten(1).median(dim=1).values.view(n, 1, 1, 1)
    factor = _uniform(n, min_contrast, 1.0, gen, images.device).view(n, 1, 1, 1)
    return median + factor * (images - median)


def intensity(images: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Contrast, window, gamma, blur or sharpen, and noise jitter; the result stays in [0, 1]."""
    n, device = images.shape[0], images.device
    view = (n, 1, 1, 1)
    if cfg.min_contrast < 1:  # drawn only when on, so that recipes without it keep their random stream
        images = reduce_contrast(images, cfg.min_contrast, gen)
    low = _uniform(n, -cfg.window_jitter, cfg.window_jitter, gen, device).view(view)
    high = _uniform(n, 1 - cfg.window_jitter, 1 + cfg.window_jitter, gen, device).view(view)
    x = ((images - low) / (high - low)).clamp(0, 1)
    gamma = torch.exp(_uniform(n, math.log(cfg.gamma_range[0]), math.log(cfg.gamma_range[1]), gen, device))
    x = x.clamp_min(1e-6) ** gamma.view(view)
    choice = torch.rand(n, generator=gen, device=device)
    sigma = _uniform(n, 0.4, 1.2, gen, device)
    blurred = _gaussian_blur(x, sigma)
    blur = (choice < cfg.blur_probability).view(view)
    sharpen = ((choice >= cfg.blur_probability)
               & (choice < cfg.blur_probability + cfg.sharpen_probability)).view(view)
    x = torch.where(blur, blurred, torch.where(sharpen, x + 0.7 * (x - blurred), x))
    noisy = (torch.rand(n, generator=gen, device=device) < cfg.noise_probability).view(view)
    noise_sd = _uniform(n, 0, cfg.max_noise, gen, device).view(view)
    noise = torch.randn(x.shape, generator=gen, device=device) * noise_sd
    return torch.where(noisy, x + noise, x).clamp(0, 1)


def augment(images: torch.Tensor, targets: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator
            ) -> tuple[torch.Tensor, torch.Tensor]:
    images, targets = geometric(images, targets, cfg, gen)
    return intensity(images, cfg, gen), targets
