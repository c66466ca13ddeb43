"""``lightseg finetune``: adapt a model to a site's own CT and labels, as a new model version in the user store.

The base model is only read. The site's slices are split into fine-tune and held-out parts; the parent and the new
model are both scored on the same held-out slices, and the card records counts only (no file names, no pixels).
"""

from __future__ import annotations

import csv
import platform
import shlex
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch

from ..cards import ModelCard, load_network, save_model
from ..defaults import FINETUNE_DEFAULTS
from ..errors import LightSegError
from ..models import build_model
from ..network import InputSpec
from ..registry import user_dir
from .augment import AugmentConfig
from .ct_slices import ct_inputs, negative_ct_slices
from .loop import EpochRecord, TrainConfig, TrainResult, predict_images, train
from .recipe import inference_state
from .reference import reference_inputs, teacher_probabilities
from .slices import SliceSet, keep_clear_slices_in_proportion, load_image_folders, split_fold, volume_slices

MIN_INFECTED_SLICES = 4
MAX_CLEAR_FRACTION = 0.25  # slices without infection kept, as a share of the fine-tune set


@dataclass
class SiteData:
    slices: SliceSet
    summary: dict = field(default_factory=dict)


def read_pairs_csv(path: Path) -> tuple[list[Path], list[Path]]:
    """A CSV with columns ``volume,label`` (paths relative to the CSV's folder, or absolute)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        pairs = [((path.parent / r["volume"]).resolve(), (path.parent / r["label"]).resolve()) for r in rows]
    except (OSError, KeyError) as exc:
        raise LightSegError(f"not a pairs CSV with 'volume' and 'label' columns ({type(exc).__name__})", path) from None
    if not pairs:
        raise LightSegError("lists no pairs", path)
    return [v for v, _ in pairs], [lab for _, lab in pairs]


def site_from_images(images: Path, masks: Path) -> SiteData:
    data = load_image_folders(images, masks)
    return SiteData(data, {"kind": "2D slices", "slices": len(data)})


def site_from_volumes(volumes: list[Path], labels: list[Path], base: ModelCard, segment: str) -> SiteData:
    if base.hu_window is None:
        raise LightSegError("base model has no HU window, so it cannot be fine-tuned on CT volumes", base.path)
    extracted = volume_slices(volumes, labels, base.hu_window, segment)
    return SiteData(extracted.slices, {"kind": "CT volumes", **extracted.summary})


def site_from_negatives(folder: Path, base: ModelCard) -> SiteData:
    """Every lung slice of the site's CTs without infection, cut as the engine cuts them for ``base`` (target 0);
    a non-CT or lung-less volume among them is refused with one line naming it."""
    if base.hu_window is None:
        raise LightSegError("base model has no HU window, so it cannot be fine-tuned on CT volumes", base.path)
    extracted = negative_ct_slices(ct_inputs(folder), base.hu_window, base.input_spec().size,
                                   neighbour_mm=base.neighbour_slices_mm)
    return SiteData(extracted.slices, {"kind": "CTs without infection", **extracted.summary})


def base_recipe(base: ModelCard) -> dict[str, Any]:
    """The loss settings (class weights, Dice weight, Tversky beta) and augmentation the base was trained with, so
    fine-tuning keeps its calibration; imported models and older cards, which do not record them, were trained with
    the defaults."""
    recorded = (base.training or {}).get("hyperparameters", {})
    defaults = TrainConfig()
    return {"class_weights": recorded.get("class_weights", defaults.class_weights),
            "dice_weight": recorded.get("dice_weight", defaults.dice_weight),
            "tversky_beta": recorded.get("tversky_beta", defaults.tversky_beta),
            "augment": recorded_augment(recorded.get("augment", {}))}


def recorded_augment(recorded: dict[str, Any]) -> AugmentConfig:
    """An AugmentConfig from a card's record of one (JSON lists back to tuples); fields it lacks keep the defaults."""
    known = {f.name for f in fields(AugmentConfig)}
    return AugmentConfig(**{key: tuple(value) if isinstance(value, list) else value
                            for key, value in recorded.items() if key in known})


def check_site_data(site: SiteData, source: str) -> None:
    infected = sum(bool(t.any()) for t in site.slices.targets)
    if infected == 0:
        raise LightSegError("the labels are empty everywhere: no slice has infection to learn from", source)
    if infected < MIN_INFECTED_SLICES:
        raise LightSegError(f"only {infected} labelled slices with infection; fine-tuning needs at least "
                            f"{MIN_INFECTED_SLICES}", source)


@dataclass
class FinetuneRequest:
    base: ModelCard
    name: str
    site: SiteData | None  # labelled site data (slices with infection), or None for negatives alone
    val_fraction: float = FINETUNE_DEFAULTS["val_fraction"]
    version: str = "1.0.0"
    output_dir: Path | None = None
    negatives: SiteData | None = None  # the site's CTs without infection


def infected_fraction(model: torch.nn.Module, spec: InputSpec, data: SliceSet, device: torch.device) -> float:
    """The share of the network input area called infection (probability >= 0.5), over a set of slices."""
    if not len(data):
        return 0.0
    return float(sum(float((p >= 0.5).mean()) for p in predict_images(model, spec, data.images, device)) / len(data))


def held_out_line(comparison: dict, parent: str, new: str) -> str:
    """The terminal's summary of a fine-tune's held-out comparison."""
    parts = []
    if comparison.get("held_out_slices"):
        parts.append(f"held-out Inf-Net Dice {comparison['parent']['infnet_dice']:.4f} ({parent}) -> "
                     f"{comparison['new'].get('infnet_dice', float('nan')):.4f} ({new}) on "
                     f"{comparison['held_out_slices']} slices")
    negatives = comparison.get("negatives_held_out")
    if negatives:
        parts.append(f"infection called on held-out slices without infection {100 * negatives['parent']:.2f} % "
                     f"({parent}) -> {100 * negatives['new']:.2f} % ({new}) of the input area on "
                     f"{negatives['slices']} slices")
    return "; ".join(parts)


def run_finetune(request: FinetuneRequest, cfg: TrainConfig, command: list[str],
                 on_epoch: Callable[[EpochRecord], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> tuple[Path, TrainResult, dict]:
    """Fine-tune and save the new model; returns its card path, the training result and the comparison."""
    base = request.base
    output_dir = request.output_dir or user_dir()
    if base.path is not None and output_dir.resolve() == base.path.parent.resolve() and request.name == base.id:
        raise LightSegError("the new model needs a name of its own; the base is never overwritten", request.name)
    negatives_train = negatives_val = None
    if request.negatives is not None:
        n_train, n_val = split_fold(len(request.negatives.slices), request.val_fraction, cfg.seed)
        negatives_train, negatives_val = request.negatives.slices.subset(n_train), request.negatives.slices.subset(n_val)
    if request.site is not None:
        data = keep_clear_slices_in_proportion(request.site.slices, MAX_CLEAR_FRACTION, cfg.seed)
        train_idx, val_idx = split_fold(len(data), request.val_fraction, cfg.seed)
        train_set, val_set = data.subset(train_idx), data.subset(val_idx)
        if negatives_train is not None:  # the negatives ride along, a batch of them with every labelled batch
            cfg.ct_per_step = cfg.batch_size
    else:
        # Negatives alone cannot rank epochs (a model that calls nothing would win): the last epoch is kept, and the
        # reference term keeps the base's calls on the bundled sample's infection.
        train_set, val_set = negatives_train, negatives_val
    spec = base.input_spec()
    cfg.input_size = spec.size[0]

    # Fine-tuning uses the main head only: freshly initialised auxiliary heads would disturb a trained decoder.
    inference_config = dict(base.arch_config)
    if "aux" in inference_config:
        inference_config["aux"] = False
    model = build_model(base.architecture, inference_config)
    model.load_state_dict(inference_state(load_network(base).state_dict(), base.architecture), strict=True)
    device = torch.device(cfg.device)
    parent_negatives = infected_fraction(model, spec, negatives_val, device) if negatives_val else None
    reference = None
    if cfg.reference_weight:
        inputs = reference_inputs(base)
        if inputs is not None:
            reference = (inputs, teacher_probabilities(model, base, inputs))
    result = train(model, spec, train_set, val_set, cfg, on_epoch=on_epoch, should_stop=should_stop,
                   reference=reference, ct=negatives_train if request.site is not None else None)
    if request.site is None:
        result.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        result.best_epoch, result.best_val = len(result.history), result.last_val
    parent_val = result.initial_val
    inference_model = build_model(base.architecture, inference_config)
    inference_model.load_state_dict(result.best_state, strict=True)
    comparison: dict[str, Any] = {"held_out_slices": len(val_set) if request.site is not None else 0}
    if request.site is not None:
        comparison.update(parent=parent_val, new=result.best_val,
                          improvement_infnet_dice=result.best_val.get("infnet_dice", 0) - parent_val["infnet_dice"])
    if negatives_val is not None:
        comparison["negatives_held_out"] = {"slices": len(negatives_val), "parent": parent_negatives,
                                            "new": infected_fraction(inference_model.to(device), spec,
                                                                     negatives_val, device),
                                            "measure": "share of the network input area called infection"}
    site_summary = {} if request.site is None else {
        **request.site.summary, "finetune_slices": len(train_set), "held_out_slices": len(val_set),
        "finetune_slices_with_infection": sum(bool(t.any()) for t in train_set.targets)}
    if request.negatives is not None:
        site_summary["without_infection"] = {**request.negatives.summary, "finetune_slices": len(negatives_train),
                                             "held_out_slices": len(negatives_val)}
    card = ModelCard(
        id=request.name, version=request.version, architecture=base.architecture, arch_config=inference_config,
        input_size=list(base.input_size), normalisation=base.normalisation, hu_window=base.hu_window,
        weights_file=f"{request.name}.pt", weights_sha256="", parameters=base.parameters,
        licence=f"site model derived from {base.id} ({base.licence})",
        description=f"{base.id} fine-tuned on site data with lightseg finetune",
        output_activation=base.output_activation, infection_channel=base.infection_channel,
        test_time_flips=list(base.test_time_flips), postprocessing=dict(base.postprocessing),
        neighbour_slices_mm=base.neighbour_slices_mm,
        training={
            "command": shlex.join(redact_site_paths(command)),
            "site_data": site_summary,
            # the parent's CTs stay the new model's (a benchmark must not count them); the site's are never named
            "trained_on_cts": list((base.training or {}).get("trained_on_cts", [])),
            "kept_epoch": "best on the held-out labelled slices" if request.site is not None else
                          "last (negatives alone cannot rank epochs)",
            "hyperparameters": {k: v for k, v in asdict(cfg).items() if k != "device"},
            "reference_slices": {"source": "bundled sample CT", "count": len(reference[0])} if reference else None,
            "stopped": result.stopped, "epochs_run": len(result.history), "best_epoch": result.best_epoch,
            "seconds": round(result.seconds, 1), "device": cfg.device, "machine": platform.machine(),
            "torch": torch.__version__, "history": result.history_dicts(),
        },
        validation={"fold": f"{len(val_set)} site slices held out (seed {cfg.seed})", "kept": result.best_val,
                    "parent_on_same_slices": parent_val, "last_epoch": result.last_val,
                    "without_infection": comparison.get("negatives_held_out")},
        parent={"id": base.id, "version": base.version, "sha256": base.weights_sha256},
    )
    path = save_model(card, inference_model.state_dict(), output_dir)
    return path, result, comparison


SITE_DATA_OPTIONS = ("--images", "--masks", "--volumes", "--labels", "--pairs", "--negative-volumes", "--stop-file")


def redact_site_paths(command: list[str]) -> list[str]:
    """The command line with the site's data paths replaced: a card records counts, never file names."""
    redacted, hide_next = [], False
    for word in command:
        option = word.split("=", 1)[0]
        if hide_next:
            redacted.append("<site data>")
            hide_next = False
        elif option in SITE_DATA_OPTIONS and "=" in word:
            redacted.append(f"{option}=<site data>")
        else:
            redacted.append(word)
            hide_next = word in SITE_DATA_OPTIONS
    return redacted


class StopSignal:
    """True once SIGINT/SIGTERM arrived or a stop file exists (checked between training steps)."""

    def __init__(self, stop_file: Path | None) -> None:
        self.stop_file = stop_file
        self.signalled = False

    def handle(self, signum, frame) -> None:  # noqa: ARG002 (signal handler signature)
        self.signalled = True

    def __call__(self) -> bool:
        return self.signalled or (self.stop_file is not None and self.stop_file.exists())


def eta_seconds(record: EpochRecord, cfg: TrainConfig, started: float) -> float:
    """Remaining time: the remaining epochs at the mean epoch time so far, capped by the time budget."""
    elapsed = time.monotonic() - started
    remaining = (cfg.epochs - record.epoch) * elapsed / max(record.epoch, 1)
    if cfg.minutes is not None:
        remaining = min(remaining, max(cfg.minutes * 60 - elapsed, 0))
    return round(remaining, 1)
