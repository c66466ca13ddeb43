"""Reference slices for fine-tuning without forgetting: the bundled sample CT, seen the way the base model sees CT.

A site fine-tune sees only the site's scanner. To keep the base model's behaviour on the data it was built for, the
new model's infection probabilities on these reference slices are kept close to the base model's (a distillation
term, as in "learning without forgetting"). The slices come from the sample CT that ships with LightSeg, so no
outside data is needed and nothing about the site is involved.
"""

from __future__ import annotations

import numpy as np
import torch

from ..cards import ModelCard
from ..io import read_image
from ..network import forward_probability
from ..lung_crops import lung_crops
from ..preprocess import crop_affines, neighbour_step, network_inputs
from ..sample import sample_path

REFERENCE_SLICES = 32


def reference_inputs(card: ModelCard, count: int = REFERENCE_SLICES) -> torch.Tensor | None:
    """(N, C, H, W) [0, 1] network inputs from evenly spaced lung slices of the sample CT (C 3 for a card with
    neighbour slices, else 1); None without an HU window."""
    if card.hu_window is None:
        return None
    scan = lung_crops(read_image(sample_path()).image)
    hu, crops = scan.hu, scan.crops
    picks = np.linspace(0, len(crops.slices) - 1, min(count, len(crops.slices))).round().astype(int)
    to_crop, _ = crop_affines(crops.boxes[picks], *hu.shape[1:])
    step = neighbour_step(scan.view.spacing[0], card.neighbour_slices_mm)
    return network_inputs(hu, crops.slices[picks], to_crop, card.hu_window, card.input_spec().size, step)


@torch.inference_mode()
def teacher_probabilities(model: torch.nn.Module, card: ModelCard, inputs: torch.Tensor) -> torch.Tensor:
    """The base model's (N, 1, H, W) infection probabilities on the reference inputs."""
    model.eval()
    return forward_probability(model, card.input_spec(), inputs)[:, None].clone()
