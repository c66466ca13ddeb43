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
import torch.nn.functional as F

from .cards import ModelCard, load_network
from .compiled import load_compiled
from .confirming import ConfirmingNetwork
from .devices import pick_device
from .errors import LightSegError
from .geometry import AxialView, image_from_array
from .io import INFECTION, LUNG
from .lungs import LungMask, field_of_view_cuts
from .models.inference import inference_form
from .network import InputSpec, forward_probability, predict_image
from .patterns.model import PatternModel
from .patterns.pattern_map import CONSOLIDATION, GROUND_GLASS, pattern_map
from .postprocess import PostProcessing, clean_infection
from .lung_crops import LungCrops, SliceBoxes, lung_crops
from .preprocess import crop_affines, neighbour_step, network_inputs, resample, restrict_to_window

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
    # with a pattern model: 0 none, 1 ground-glass, 2 consolidation on the input's grid (patterns/pattern_map.py)
    patterns: sitk.Image | None = None
    network_form: str = "eager fp32"  # or a compiled form's name (compiled.py), for volumes on the CPU


def back_onto_slices(prob_small: torch.Tensor, z: np.ndarray, boxes: np.ndarray, to_slice: torch.Tensor, height: int,
                     width: int) -> tuple[tuple[np.ndarray, slice, slice], np.ndarray]:
    """A batch's probabilities at the network's size, resampled onto slices ``z`` only inside the union of their crop
    boxes (which holds all of their lung): that window of the canonical volume, and the probabilities for it."""
    y0, y1, x0, x1 = (int(v) for v in (boxes[:, 0].min(), boxes[:, 1].max(), boxes[:, 2].min(), boxes[:, 3].max()))
    theta = restrict_to_window(to_slice, (y0, y1, x0, x1), height, width)
    prob = resample(prob_small[:, None], theta, (y1 - y0, x1 - x0))[:, 0].clamp_(0, 1).cpu().numpy()
    return (z, slice(y0, y1), slice(x0, x1)), prob


class Segmenter:
    """A loaded model on a device, ready to segment volumes and slices."""

    def __init__(self, card: ModelCard, device: str = "auto", batch_size: int | None = None,
                 test_time_flips: tuple[str, ...] | None = None, postprocessing: PostProcessing | None = None,
                 patterns: PatternModel | None = None, compiled: bool = True) -> None:
        """``test_time_flips`` replaces the card's (``()`` for a single plain pass: faster, slightly less accurate);
        ``postprocessing`` replaces the card's 3D clean-up of volumes (``PostProcessing()`` for none); ``patterns``
        also splits the infection into ground-glass and consolidation (on the same crops, after the clean-up). A
        clean-up with ``confirm_with`` loads that confirming model too (``confirming.py``). With ``compiled``, CT
        volumes on the CPU run the network's compiled form when ``lightseg compile`` built one (``compiled.py``)."""
        self.card = card
        self.postprocessing = card.postprocessing_settings() if postprocessing is None else postprocessing
        spec = card.input_spec()
        self.spec = spec if test_time_flips is None else replace(spec, flips=tuple(test_time_flips))
        self.device = pick_device(device)
        # BatchNorm folded and MiniSeg's linear steps merged (same function, fewer passes over memory);
        # channels_last suits oneDNN's depthwise kernels on the CPU (measured in benchmarks/bench_inference.py)
        self.model = inference_form(load_network(card)).to(self.device, memory_format=torch.channels_last)
        self.compiled, self.compiled_note = load_compiled(card, self.spec, self.device) if compiled else (None, "")
        self.network_form = self.compiled.form if self.compiled is not None else "eager fp32"
        self.batch_size = batch_size or (32 if self.device.type == "cuda" else 8)
        self.patterns = patterns
        self.threshold = THRESHOLD  # infection probability at or above which a voxel is infection
        confirm_with = self.postprocessing.confirm_with
        self.confirming = ConfirmingNetwork.load(confirm_with, self.device, compiled) if confirm_with else None
        if patterns is not None:
            patterns.net.to(self.device)

    def _forward(self, x01: torch.Tensor, model: torch.nn.Module | None = None,
                 spec: InputSpec | None = None) -> torch.Tensor:
        """Probabilities of this model's volume network (compiled or eager), or of ``model`` read as ``spec`` (the
        confirming network)."""
        if model is None:
            model = self.model if self.compiled is None else self.compiled
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            return forward_probability(model, self.spec if spec is None else spec,
                                       x01, torch.channels_last).float()

    def _clean(self, labels_c: np.ndarray, hu: np.ndarray, lungs: LungMask, crops: SliceBoxes,
               spacing: tuple[float, float, float], to_crop: torch.Tensor, to_slice: torch.Tensor,
               timings: dict[str, float]) -> dict[str, dict[str, float]]:
        """The 3D clean-up, inside the lungs' box (one slice lower, so a component on the lowest lung slice still
        has the slice below it): dropped infection becomes lung. The card's own rules first; then, with a
        confirming network, the components it does not touch (its time goes into ``timings``). Returns what each
        rule removed."""
        box = (slice(max(int(crops.slices[0]) - 1, 0), int(crops.slices[-1]) + 1),
               slice(int(crops.boxes[:, 0].min()), int(crops.boxes[:, 1].max())),
               slice(int(crops.boxes[:, 2].min()), int(crops.boxes[:, 3].max())))
        in_box = labels_c[box]
        infection = in_box == INFECTION
        kept = infection.copy()
        rules = self.postprocessing
        removed = clean_infection(kept, hu[box], lungs.lungs[box], spacing, rules.without_confirmation())
        if rules.confirm_with and kept.any():
            # removing whole components leaves the others as they were, so this second labelling judges the same ones
            infected_slices = box[0].start + np.flatnonzero(kept.any(axis=(1, 2)))
            tic = time.perf_counter()
            confirmed = self._confirming_calls(hu, lungs, crops, to_crop, to_slice, infected_slices, spacing[0])[box]
            timings["confirming_network"] = time.perf_counter() - tic
            clean_infection(confirmed, hu[box], lungs.lungs[box], spacing, self.confirming.postprocessing)
            removed |= clean_infection(kept, hu[box], lungs.lungs[box], spacing,
                                       PostProcessing(confirm_with=rules.confirm_with), confirmed)
        if removed:
            in_box[infection & ~kept] = LUNG
        return removed

    def _confirming_calls(self, hu: np.ndarray, lungs: LungMask, crops: SliceBoxes, to_crop: torch.Tensor,
                          to_slice: torch.Tensor, infected_slices: np.ndarray, slice_mm: float) -> np.ndarray:
        """The confirming network's calls inside the lungs (canonical, whole volume), computed on the slices with
        infection and then on every lung slice next to one where it calls something, until none is left: each of
        its components that reaches an infected slice is then whole, as if it had run on every slice, and its own
        rules judge it the same. On a CT with little infection it runs on few slices."""
        confirming = self.confirming
        calls = np.zeros(hu.shape, bool)
        position_of = {int(z): p for p, z in enumerate(crops.slices)}
        done = np.zeros(len(crops.slices), bool)
        has_calls = np.zeros(len(crops.slices), bool)
        step = neighbour_step(slice_mm, confirming.spec.neighbour_mm)
        height, width = hu.shape[1:]
        todo = np.array(sorted(position_of[int(z)] for z in infected_slices if int(z) in position_of), int)
        while len(todo):
            for start in range(0, len(todo), self.batch_size):
                positions = todo[start:start + self.batch_size]
                z = crops.slices[positions]
                x01 = network_inputs(hu, z, to_crop[positions], confirming.card.hu_window, confirming.spec.size, step,
                                     self.device)
                prob_small = self._forward(x01, confirming.model, confirming.spec)
                window, prob = back_onto_slices(prob_small, z, crops.boxes[positions], to_slice[positions], height,
                                                width)
                calls[window] = lungs.lungs[window] & (prob >= THRESHOLD)
                has_calls[positions] = calls[window].any(axis=(1, 2))
            done[todo] = True
            beside = {int(z) + d for z in crops.slices[has_calls] for d in (-1, 1)}
            todo = np.array(sorted(p for p in (position_of.get(z) for z in beside) if p is not None and not done[p]),
                            int)
        return calls

    def _consolidation_of_batch(self, small: dict[int, torch.Tensor], labels: np.ndarray, x01: torch.Tensor,
                                first: int) -> None:
        """The pattern network on the batch's slices that hold infection; their consolidation maps (at the network's
        output size) go into ``small``, keyed by the slice's position among the lung slices."""
        infected = np.flatnonzero((labels == INFECTION).any(axis=(1, 2)))
        if len(infected):
            maps = self.patterns.consolidation(x01[torch.from_numpy(infected).to(x01.device)]).float().cpu()
            small.update({first + int(i): m for i, m in zip(infected, maps)})

    @staticmethod
    def _patterns_of(labels_c: np.ndarray, small: dict[int, torch.Tensor], crops: SliceBoxes,
                     to_slice: torch.Tensor) -> np.ndarray:
        """The pattern map: each infection voxel (after the clean-up) reads its slice's consolidation map at its own
        position through the crop affine, the bilinear sample the infection probability got; only infected voxels
        are sampled, not whole slices. Infection lies in the lungs, so inside each slice's crop box."""
        patterns_c = np.zeros(labels_c.shape, np.uint8)
        height, width = labels_c.shape[1:]
        for position, consolidation in small.items():
            z = int(crops.slices[position])
            y0, y1, x0, x1 = (int(v) for v in crops.boxes[position])
            rows, columns = np.nonzero(labels_c[z, y0:y1, x0:x1] == INFECTION)
            if not len(rows):
                continue
            rows, columns = rows + y0, columns + x0
            points = torch.from_numpy(np.stack([(2 * columns + 1) / width - 1, (2 * rows + 1) / height - 1,
                                                np.ones(len(rows))], axis=1))
            grid = (points @ to_slice[position].double().T).float().view(1, 1, -1, 2)  # slice -> crop, normalised
            sampled = F.grid_sample(consolidation[None, None], grid, mode="bilinear", padding_mode="zeros",
                                    align_corners=False).view(-1).numpy()
            patterns_c[z, rows, columns] = np.where(sampled >= 0.5, CONSOLIDATION, GROUND_GLASS)
        return patterns_c

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
        image01 = pixels.astype(np.float32) / scale
        prob = predict_image(self.model, self.spec, image01, self.device)
        if probabilities is not None:
            probabilities[...] = prob
        label_array = (prob >= self.threshold).astype(np.uint8) * INFECTION
        patterns = None
        if self.patterns is not None:
            x = torch.from_numpy(np.ascontiguousarray(image01))[None, None].to(self.device)
            consolidation = self.patterns.consolidation(x, full_size=True)[0].cpu().numpy()
            patterns = image_from_array(pattern_map(label_array, consolidation), image)
        return Segmentation(image_from_array(label_array, image), None, None, 1, 1,
                            {"inference": time.perf_counter() - start}, self.spec.flips, patterns=patterns)

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
        consolidation_small: dict[int, torch.Tensor] = {}  # lung-slice position -> the pattern network's map
        pattern_seconds = 0.0
        if prob_c is not None:
            prob_c[...] = 0
        height, width = hu.shape[1:]
        to_crop, to_slice = crop_affines(crops.boxes, height, width)
        total = len(crops.slices)
        step = neighbour_step(view.spacing[0], self.spec.neighbour_mm)
        for start in range(0, total, self.batch_size):
            if cancel is not None and cancel():
                raise Cancelled()
            batch = slice(start, start + self.batch_size)
            z = crops.slices[batch]
            x01 = network_inputs(hu, z, to_crop[batch], self.card.hu_window, self.spec.size, step, self.device)
            window, prob = back_onto_slices(self._forward(x01), z, crops.boxes[batch], to_slice[batch], height, width)
            labels_c[window] = np.where(lungs.lungs[window], np.where(prob >= self.threshold, INFECTION, LUNG), 0)
            if self.patterns is not None:
                pattern_tic = time.perf_counter()
                centre = x01[:, x01.shape[1] // 2, None]  # the slice itself, whatever its neighbour channels
                self._consolidation_of_batch(consolidation_small, labels_c[window], centre, start)
                pattern_seconds += time.perf_counter() - pattern_tic
            if prob_c is not None:
                prob_c[window] = prob
            if progress is not None:
                progress(min(start + self.batch_size, total), total)
        timings["inference"] = time.perf_counter() - tic - pattern_seconds
        tic = time.perf_counter()
        removed = {}
        if total and self.postprocessing.active:
            removed = self._clean(labels_c, hu, lungs, crops, view.spacing, to_crop, to_slice, timings)
        timings["postprocessing"] = time.perf_counter() - tic - timings.get("confirming_network", 0.0)
        patterns = None
        if self.patterns is not None:
            tic = time.perf_counter()
            patterns_c = self._patterns_of(labels_c, consolidation_small, crops, to_slice)
            patterns = image_from_array(view.from_canonical(patterns_c), image)
            timings["patterns"] = pattern_seconds + time.perf_counter() - tic
        notes = [TURNED_NOTE] if scan.turned else []
        if self.compiled_note:
            notes.append(self.compiled_note)
        cuts = field_of_view_cuts(lungs.lungs)
        if cuts:
            notes.append(f"the lungs run out of the field of view ({', '.join(cuts)}): lung volumes and percent "
                         "involved cover only the part in view")
        return Segmentation(image_from_array(labels, image), view, lungs, hu.shape[0], total, timings,
                            self.spec.flips, {"settings": self.postprocessing.to_card(), "removed": removed}, notes,
                            patterns, self.network_form)
