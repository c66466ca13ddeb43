"""Slice-wise batched inference: CT volume or 2D slice in, label map (and optionally probabilities) out.

Memory stays bounded: the HU volume is read through a view, one batch of slices at a time is converted to float,
labels are uint8, and probabilities are only kept when the caller passes an array (or a memory map) for them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import SimpleITK as sitk
import torch

from .cards import ModelCard, load_network
from .devices import pick_device
from .errors import LightSegError
from .geometry import AxialView, image_from_array
from .io import INFECTION, LUNG
from .lungs import LungMask, field_of_view_cuts
from .models.inference import inference_form
from .network import forward_probability, predict_image
from .postprocess import PostProcessing, clean_infection
from .lung_crops import LungCrops, SliceBoxes, lung_crops
from .preprocess import crop_affines, crops_for_network, resample, restrict_to_window

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]
THRESHOLD = 0.5
TURNED_NOTE = ("the spine lies in front of the lungs in the image's orientation (a prone patient, or a header that lost "
               "the patient's position): the slices were turned 180 degrees for the network and the lungs named by "
               "anatomy")


class Cancelled(Exception):
    """Raised between batches when the cancel callable returns True."""


@dataclass
class Segmentation:
    """The result of one run: labels on the input's grid, the lung sides (canonical order) and timings."""

    labels: sitk.Image
    view: AxialView | None
    lungs: LungMask | None
    slices_total: int
    slices_segmented: int
    timings: dict[str, float] = field(default_factory=dict)
    test_time_flips: tuple[str, ...] = ()  # the flipped passes averaged with the plain one
    # volumes only: the 3D clean-up's "settings" and what it "removed" per rule (components, mL)
    postprocessing: dict[str, dict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was decided about the input (a prone patient turned)


class Segmenter:
    """A loaded model on a device, ready to segment volumes and slices."""

    def __init__(self, card: ModelCard, device: str = "auto", batch_size: int | None = None,
                 test_time_flips: tuple[str, ...] | None = None, postprocessing: PostProcessing | None = None
                 ) -> None:
        """``test_time_flips`` replaces the card's (``()`` for a single plain pass: faster, slightly less accurate);
        ``postprocessing`` replaces the card's 3D clean-up of volumes (``PostProcessing()`` for none)."""
        self.card = card
        self.postprocessing = card.postprocessing_settings() if postprocessing is None else postprocessing
        spec = card.input_spec()
        self.spec = spec if test_time_flips is None else replace(spec, flips=tuple(test_time_flips))
        self.device = pick_device(device)
        # BatchNorm folded and MiniSeg's linear steps merged (same function, fewer passes over memory);
        # channels_last suits oneDNN's depthwise kernels on the CPU (measured in benchmarks/bench_inference.py)
        self.model = inference_form(load_network(card)).to(self.device, memory_format=torch.channels_last)
        self.batch_size = batch_size or (32 if self.device.type == "cuda" else 8)

    def _forward(self, x01: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            return forward_probability(self.model, self.spec, x01, torch.channels_last).float()

    def _clean(self, labels_c: np.ndarray, hu: np.ndarray, lungs: LungMask, crops: SliceBoxes,
               spacing: tuple[float, float, float]) -> dict[str, dict[str, float]]:
        """The 3D clean-up, inside the lungs' box (one slice lower, so a component on the lowest lung slice still
        has the slice below it): dropped infection becomes lung. Returns what each rule removed."""
        box = (slice(max(int(crops.slices[0]) - 1, 0), int(crops.slices[-1]) + 1),
               slice(int(crops.boxes[:, 0].min()), int(crops.boxes[:, 1].max())),
               slice(int(crops.boxes[:, 2].min()), int(crops.boxes[:, 3].max())))
        in_box = labels_c[box]
        infection = in_box == INFECTION
        kept = infection.copy()
        removed = clean_infection(kept, hu[box], lungs.lungs[box], spacing, self.postprocessing)
        if removed:
            in_box[infection & ~kept] = LUNG
        return removed

    def segment(self, image: sitk.Image, is_2d: bool, progress: Progress | None = None, cancel: Cancel | None = None,
                probabilities: np.ndarray | None = None, scan: LungCrops | None = None) -> Segmentation:
        if is_2d:
            return self.segment_slice(image, probabilities)
        return self.segment_volume(image, progress, cancel, probabilities, scan)

    def segment_slice(self, image: sitk.Image, probabilities: np.ndarray | None = None) -> Segmentation:
        """A 2D 8-bit slice, already windowed and lung-cropped like the training slices: pixel / 255."""
        start = time.perf_counter()
        pixels = sitk.GetArrayViewFromImage(image)
        scale = 65535.0 if pixels.dtype == np.uint16 else 255.0
        prob = predict_image(self.model, self.spec, pixels.astype(np.float32) / scale, self.device)
        if probabilities is not None:
            probabilities[...] = prob
        labels = image_from_array((prob >= THRESHOLD).astype(np.uint8) * INFECTION, image)
        return Segmentation(labels, None, None, 1, 1, {"inference": time.perf_counter() - start}, self.spec.flips)

    def segment_volume(self, image: sitk.Image, progress: Progress | None = None, cancel: Cancel | None = None,
                       probabilities: np.ndarray | None = None, scan: LungCrops | None = None) -> Segmentation:
        """A CT volume in HU, in any orientation; ``probabilities`` (same shape as the image array) is filled if given.

        ``scan`` is ``lung_crops(image)`` when the caller already has it (``lightseg segment`` computes it while torch
        loads); the lung mask does not depend on the model.
        """
        if self.card.hu_window is None:
            raise LightSegError("model card has no HU window, so it segments 2D slices only", self.card.path)
        if scan is None:
            scan = lung_crops(image)
        elif scan.image is not image:
            raise ValueError("the lung crops given were computed on another image")
        view, hu, lungs, crops = scan.view, scan.hu, scan.lungs, scan.crops
        timings: dict[str, float] = {"lung_mask": scan.seconds}

        tic = time.perf_counter()
        labels = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8)
        labels_c = view.to_canonical(labels)
        prob_c = None if probabilities is None else view.to_canonical(probabilities)
        if prob_c is not None:
            prob_c[...] = 0
        height, width = hu.shape[1:]
        to_crop, to_slice = crop_affines(crops.boxes, height, width)
        total = len(crops.slices)
        for start in range(0, total, self.batch_size):
            if cancel is not None and cancel():
                raise Cancelled()
            batch = slice(start, start + self.batch_size)
            z = crops.slices[batch]
            x01 = crops_for_network(hu[z], to_crop[batch], self.card.hu_window, self.spec.size, self.device)
            prob_small = self._forward(x01)
            # back onto the slices only inside the batch's union of crop boxes, which holds all of their lung
            boxes = crops.boxes[batch]
            y0, y1, x0, x1 = (int(v) for v in (boxes[:, 0].min(), boxes[:, 1].max(), boxes[:, 2].min(), boxes[:, 3].max()))
            theta = restrict_to_window(to_slice[batch], (y0, y1, x0, x1), height, width)
            prob = resample(prob_small[:, None], theta, (y1 - y0, x1 - x0))[:, 0].clamp_(0, 1).cpu().numpy()
            window = (z, slice(y0, y1), slice(x0, x1))
            labels_c[window] = np.where(lungs.lungs[window], np.where(prob >= THRESHOLD, INFECTION, LUNG), 0)
            if prob_c is not None:
                prob_c[window] = prob
            if progress is not None:
                progress(min(start + self.batch_size, total), total)
        timings["inference"] = time.perf_counter() - tic
        tic = time.perf_counter()
        removed = {}
        if total and self.postprocessing.active:
            removed = self._clean(labels_c, hu, lungs, crops, view.spacing)
        timings["postprocessing"] = time.perf_counter() - tic
        notes = [TURNED_NOTE] if scan.turned else []
        cuts = field_of_view_cuts(lungs.lungs)
        if cuts:
            notes.append(f"the lungs run out of the field of view ({', '.join(cuts)}): lung volumes and percent "
                         "involved cover only the part in view")
        return Segmentation(image_from_array(labels, image), view, lungs, hu.shape[0], total, timings,
                            self.spec.flips, {"settings": self.postprocessing.to_card(), "removed": removed}, notes)
