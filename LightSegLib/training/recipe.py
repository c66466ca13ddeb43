"""``lightseg train``: from data folders to a saved model with its card."""

from __future__ import annotations

import json
import platform
import shlex
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..cards import HUWindow, ModelCard, load_network, save_model
from ..errors import LightSegError
from ..models import build_model, count_parameters
from ..network import InputSpec
from .loop import EpochRecord, TrainConfig, TrainResult, train
from .slices import SliceSet, split_fold

# Training recipes by ``--arch`` name: the architecture, its constructor arguments, output activation and input size.
# Only MiniSeg keeps the official 3-channel, 2-class layout (so imported checkpoints can initialise it).
ARCH_DEFAULTS = {
    "miniseg": {"architecture": "miniseg", "config": {"in_channels": 3, "num_classes": 2}, "activation": "softmax",
                "input_size": 288},
    "ulite": {"architecture": "ulite", "config": {"in_channels": 1, "num_classes": 1}, "activation": "sigmoid",
              "input_size": 256},
    "malunet": {"architecture": "malunet", "config": {"in_channels": 1, "num_classes": 1}, "activation": "sigmoid",
                "input_size": 288},
    "unetv2": {"architecture": "unetv2", "config": {"in_channels": 1, "num_classes": 1, "encoder": "pvtv2_b2",
                                                    "head_channels": 32}, "activation": "sigmoid", "input_size": 288},
    "unetv2-lite": {"architecture": "unetv2", "config": {"in_channels": 1, "num_classes": 1, "encoder": "miniseg",
                                                         "head_channels": 8}, "activation": "sigmoid",
                    "input_size": 288},
}
DEEP_SUPERVISED = {"miniseg", "unetv2"}  # architectures with auxiliary outputs for training (config "aux")
LICENCE_OWN = "Apache-2.0 (weights trained by LightSeg on COVID-SemiSeg; see the data licences in the card)"


@dataclass
class TrainRequest:
    """What ``lightseg train`` was asked for, beyond the loop's hyper-parameters."""

    arch: str
    name: str
    output_dir: Path
    data: SliceSet
    data_description: dict
    val_fraction: float = 0.2
    val_fold: int = 0
    keep: str = "best"
    init: ModelCard | None = None
    hu_window: HUWindow | None = None
    test_time_flips: tuple[str, ...] = ()  # also used by the per-epoch validation, as at inference
    postprocessing: dict = field(default_factory=dict)  # the card's 3D clean-up settings (not used in training)
    version: str = "1.0.0"
    description: str = ""
    extra_card: dict = field(default_factory=dict)
    pseudo: SliceSet | None = None  # pseudo-labelled slices mixed into every step (TrainConfig.pseudo_per_step)
    pseudo_description: dict | None = None
    ct: SliceSet | None = None  # slices cut from CT volumes by the engine (TrainConfig.ct_per_step), never validated on
    ct_description: dict | None = None


def inference_state(state: dict[str, torch.Tensor], architecture: str) -> dict[str, torch.Tensor]:
    """Drop MiniSeg's auxiliary training heads (heads.1-3); inference uses the main head only."""
    if architecture != "miniseg":
        return state
    return {k: v for k, v in state.items() if not (k.startswith("heads.") and not k.startswith("heads.0."))}


def _training_network(arch: str, init: ModelCard | None) -> torch.nn.Module:
    architecture = ARCH_DEFAULTS[arch]["architecture"]
    config = dict(ARCH_DEFAULTS[arch]["config"])
    if architecture in DEEP_SUPERVISED:
        config["aux"] = True
    if init is not None:
        if init.architecture != architecture:
            raise LightSegError(f"initial model is a {init.architecture}, not a {architecture}", init.path)
        config.update({k: v for k, v in init.arch_config.items() if k != "aux"})
    model = build_model(architecture, config)
    if init is not None:
        missing, unexpected = model.load_state_dict(load_network(init).state_dict(), strict=False)
        if unexpected or any(not k.startswith("heads.") for k in missing):
            raise LightSegError("initial model's weights do not fit the architecture", init.path)
    return model


def arch_recipe(arch: str) -> dict:
    """The training defaults of ``--arch`` (architecture, config, activation, input size); one line if unknown."""
    if arch not in ARCH_DEFAULTS:
        raise LightSegError(f"unknown architecture {arch!r}; choose from {', '.join(ARCH_DEFAULTS)}")
    return ARCH_DEFAULTS[arch]


def run_training(request: TrainRequest, cfg: TrainConfig, command: list[str],
                 on_epoch: Callable[[EpochRecord], None] | None = None) -> tuple[Path, TrainResult]:
    """Split, train and save; returns the card path and the training result."""
    arch_recipe(request.arch)
    train_idx, val_idx = split_fold(len(request.data), request.val_fraction, cfg.seed, request.val_fold)
    train_set, val_set = request.data.subset(train_idx), request.data.subset(val_idx)
    if request.init is not None:
        mean, std = request.init.normalisation["mean"], request.init.normalisation["std"]
    else:
        channels = ARCH_DEFAULTS[request.arch]["config"]["in_channels"]
        mean, std = (list(v) for v in zip(*[train_set.intensity_stats()] * channels))
    activation = ARCH_DEFAULTS[request.arch]["activation"]
    spec = InputSpec(mean, std, activation, 1 if activation == "softmax" else 0, (cfg.input_size, cfg.input_size),
                     request.test_time_flips)
    architecture = ARCH_DEFAULTS[request.arch]["architecture"]
    torch.manual_seed(cfg.seed)  # the initial weights of a model trained from scratch come from the seed too
    model = _training_network(request.arch, request.init)
    result = train(model, spec, train_set, val_set, cfg, on_epoch=on_epoch, pseudo=request.pseudo, ct=request.ct)
    state = result.best_state if request.keep == "best" else {k: v.cpu() for k, v in model.state_dict().items()}
    inference_config = inference_arch_config(model)
    inference_model = build_model(architecture, inference_config)
    inference_model.load_state_dict(inference_state(state, architecture), strict=True)

    card = ModelCard(
        id=request.name,
        version=request.version,
        architecture=architecture,
        arch_config=inference_config,
        input_size=[cfg.input_size, cfg.input_size],
        normalisation={"mean": mean, "std": std},
        hu_window=request.hu_window,
        weights_file=f"{request.name}.pt",
        weights_sha256="",
        parameters=count_parameters(inference_model),
        licence=LICENCE_OWN,
        description=request.description,
        output_activation=activation,
        infection_channel=spec.infection_channel,
        test_time_flips=list(request.test_time_flips),
        postprocessing=dict(request.postprocessing),
        training={
            "command": shlex.join(command),
            "data": request.data_description,
            "pseudo_labelled_data": request.pseudo_description,
            "ct_data": request.ct_description,
            "trained_on_cts": trained_on_cts(request),
            "train_slices": len(train_set),
            "validation_slices": len(val_set),
            "validation_names": val_set.names,
            "hyperparameters": {k: v for k, v in asdict(cfg).items() if k != "device"},
            "kept_checkpoint": request.keep,
            "initialised_from": None if request.init is None else {
                "id": request.init.id, "sha256": request.init.weights_sha256,
                "training_command": request.init.training.get("command"),
                # The parent's own parent, and so on: the card holds the whole recipe.
                "initialised_from": request.init.training.get("initialised_from")},
            "stopped": result.stopped,
            "seconds": round(result.seconds, 1),
            "device": cfg.device,
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
            "torch": torch.__version__,
            "history": result.history_dicts(),
        },
        validation={
            "fold": f"{len(val_set)} slices held out from the training folder (seed {cfg.seed}"
                    + (f", fold {request.val_fold})" if request.val_fold else ")"),
            "selected_epoch": result.best_epoch if request.keep == "best" else len(result.history),
            "kept": result.best_val if request.keep == "best" else result.last_val,
            "last_epoch": result.last_val,
            "note": ("'kept' is measured on the fold that chose the epoch (optimistic); 'last_epoch' is not "
                     "selected on it") if request.keep == "best" else "",
        },
        **request.extra_card,
    )
    path = save_model(card, inference_model.state_dict(), request.output_dir)
    return path, result


def trained_on_cts(request: TrainRequest) -> list[str]:
    """The CTs (file or folder names) the weights learnt from: this run's CT slices and every ancestor's, so a
    benchmark can tell which of its CTs are evidence for the model."""
    own = {name for part in (request.ct_description or {}).values() for name in part.get("cts", [])}
    inherited = set((request.init.training or {}).get("trained_on_cts", [])) if request.init else set()
    return sorted(own | inherited)


def inference_arch_config(model: torch.nn.Module) -> dict:
    """The constructor arguments of an inference copy of ``model`` (auxiliary outputs off)."""
    config = dict(model.config)
    if "aux" in config:
        config["aux"] = False
    return config


def describe_command() -> list[str]:
    return ["lightseg"] + sys.argv[1:]


def print_epoch(record: EpochRecord) -> None:
    print(json.dumps(asdict(record)), flush=True)
