"""The training loop shared by ``lightseg train`` and ``lightseg finetune``."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import metrics
from ..network import InputSpec, infection_probability, normalise_input, predict_image
from .augment import AugmentConfig, augment
from .slices import SliceSet

# Deep-supervision weights of the official MiniSeg training: main head, then the three auxiliary heads.
DEEP_SUPERVISION_WEIGHTS = (1.0, 0.4, 0.4, 0.4)


@dataclass
class TrainConfig:
    epochs: int = 150
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    input_size: int = 288
    seed: int = 0
    dice_weight: float = 1.0
    tversky_beta: float = 0.5  # weight of missed infection in the overlap term: 0.5 is soft Dice, more favours recall
    class_weights: str = "enet"  # "enet" (official MiniSeg rule) or "none" (plain cross-entropy)
    minutes: float | None = None
    patience: int | None = None
    freeze_batchnorm: bool = False
    anchor_weight: float = 0.0  # L2-SP: pull the weights towards the starting ones (fine-tuning without forgetting)
    reference_weight: float = 0.0  # keep the starting model's outputs on reference slices (learning without forgetting)
    trainable: tuple[str, ...] = ()  # modules (parameter-name prefixes) to train, empty for all; the rest stay fixed
    pseudo_per_step: int = 0  # pseudo-labelled slices added to every step's batch (semi-supervised training)
    pseudo_weight: float = 1.0  # weight of their loss against the labelled slices' loss
    ct_per_step: int = 0  # CT slices cut by the engine (training/ct_slices.py) added to every step's batch
    ct_weight: float = 1.0  # weight of their loss against the labelled slices' loss
    device: str = "cpu"
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class EpochRecord:
    epoch: int
    steps: int
    loss: float
    lr: float
    seconds: float
    val_infnet_dice: float
    val_dice: float


@dataclass
class TrainResult:
    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_val: dict[str, float]
    last_val: dict[str, float]
    initial_val: dict[str, float]  # the starting weights on the validation set (epoch 0)
    history: list[EpochRecord]
    stopped: str  # "completed", "time budget", "early stopping", "stop requested"
    seconds: float

    def history_dicts(self) -> list[dict]:
        return [asdict(r) for r in self.history]


def class_weights(scheme: str, infection_fraction: float) -> torch.Tensor:
    """Cross-entropy weights of (background, infection): "enet", 1 / ln(1.1 + f_c) (the official MiniSeg rule), or
    "none". ENet's weights favour the rare infection class, which also pushes background probabilities up."""
    if scheme == "none":
        return torch.ones(2)
    if scheme != "enet":
        raise ValueError(f"unknown class weighting {scheme!r}; use enet or none")
    f = torch.tensor([1 - infection_fraction, infection_fraction])
    return 1 / torch.log(1.1 + f)


def overlap_loss(prob: torch.Tensor, target: torch.Tensor, beta: float = 0.5, eps: float = 1.0) -> torch.Tensor:
    """Per-image soft Tversky loss, averaged over the batch: 1 - (2 TP + eps) / (2 TP + 2 (1 - beta) FP + 2 beta FN
    + eps), so false negatives weigh ``beta`` and false positives ``1 - beta``; at 0.5 it is the soft Dice loss.

    With FP = sum(prob) - TP and FN = sum(target) - TP the denominator is 2 (1 - beta) sum(prob) + 2 beta sum(target)
    + eps, which at 0.5 is computed exactly as the Dice loss always was, so earlier recipes train bit for bit as before.
    """
    dims = tuple(range(1, prob.ndim))
    tp = (prob * target).sum(dims)
    return (1 - (2 * tp + eps) / (2 * (1 - beta) * prob.sum(dims) + 2 * beta * target.sum(dims) + eps)).mean()


def segmentation_loss(outputs: tuple[torch.Tensor, ...], target: torch.Tensor, spec: InputSpec,
                      weights: torch.Tensor, dice_weight: float, tversky_beta: float = 0.5) -> torch.Tensor:
    """Class-weighted cross-entropy plus soft Dice (Tversky when ``tversky_beta`` is not 0.5) on every output, with
    deep-supervision weights."""
    total = target.new_zeros(())
    for w, logits in zip(DEEP_SUPERVISION_WEIGHTS, outputs):
        logits = logits.float()
        if spec.activation == "sigmoid":
            ce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=weights[1] / weights[0])
        else:
            ce = F.cross_entropy(logits, torch.cat([1 - target, target], 1), weight=weights)
        prob = infection_probability(logits, spec.activation, spec.infection_channel).unsqueeze(1)
        total = total + w * (ce + dice_weight * overlap_loss(prob, target, tversky_beta))
    return total


def distillation_loss(logits: torch.Tensor, teacher: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """Cross-entropy of the network's infection probability against a teacher's (B,1,H,W) probabilities."""
    logits = logits.float()
    if spec.activation == "sigmoid":
        return F.binary_cross_entropy_with_logits(logits[:, :1], teacher)
    return F.cross_entropy(logits, torch.cat([1 - teacher, teacher], 1))


def predict_images(model: nn.Module, spec: InputSpec, images: list[np.ndarray], device: torch.device
                   ) -> list[np.ndarray]:
    """Infection probability of each [0, 1] image at its own size, with the model in eval mode."""
    was_training = model.training
    model.eval()
    probabilities = [predict_image(model, spec, image, device) for image in images]
    model.train(was_training)
    return probabilities


def evaluate_set(model: nn.Module, spec: InputSpec, data: SliceSet, device: torch.device) -> dict[str, float]:
    """Mean Inf-Net-style Dice and Dice@0.5 over a slice set (fast: no HD95)."""
    probabilities = predict_images(model, spec, data.images, device)
    truths = [t > 0.5 for t in data.targets]
    return {
        "infnet_dice": float(np.mean([metrics.infnet_mean_dice(p, t) for p, t in zip(probabilities, truths)])),
        "dice": float(np.mean([metrics.dice(p >= 0.5, t) for p, t in zip(probabilities, truths)])),
        "images": len(data),
    }


def _progress(step: int, total_steps: int, seconds: float, minutes: float | None) -> float:
    """Fraction of the run done, by steps or, under a time budget, by time if that is further along.

    The poly learning rate follows it, so a run cut short by ``--minutes`` still ends with its rate annealed.
    """
    done = step / total_steps
    if minutes:
        done = max(done, seconds / (minutes * 60))
    return min(done, 1.0)


def in_stages(name: str, prefixes: tuple[str, ...]) -> bool:
    """True if the parameter ``name`` is inside one of the modules ``prefixes`` ("enc.1" holds "enc.1.x", not "enc.10")."""
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def _set_batchnorm_eval(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


class SliceStream:
    """Extra training slices (pseudo-labelled, or cut from CTs) handed out ``count`` at a time in a seeded order,
    reshuffled after each full pass."""

    def __init__(self, data: SliceSet, size: int, device: torch.device, gen: torch.Generator) -> None:
        self.images, self.targets = (t.to(device) for t in data.as_tensors(size))
        self.gen = gen
        self.order = torch.empty(0, dtype=torch.long, device=device)

    def take(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        if len(self.order) < count:
            fresh = torch.randperm(len(self.images), generator=self.gen, device=self.images.device)
            self.order = torch.cat([self.order, fresh])
        idx, self.order = self.order[:count], self.order[count:]
        return self.images[idx], self.targets[idx]


def train(model: nn.Module, spec: InputSpec, train_set: SliceSet, val_set: SliceSet | None, cfg: TrainConfig,
          on_epoch: Callable[[EpochRecord], None] | None = None,
          should_stop: Callable[[], bool] | None = None,
          reference: tuple[torch.Tensor, torch.Tensor] | None = None,
          pseudo: SliceSet | None = None, ct: SliceSet | None = None) -> TrainResult:
    """Train ``model`` in place; returns the state with the best validation Inf-Net Dice (or the last one).

    ``reference`` is (inputs, teacher probabilities): with ``cfg.reference_weight`` each step also fits a batch of
    them, so the model keeps the teacher's behaviour there.

    ``pseudo`` holds pseudo-labelled slices: with ``cfg.pseudo_per_step`` each step's batch also carries that many
    of them (augmented alike, in the same forward pass), their loss weighted by ``cfg.pseudo_weight``; ``ct`` holds
    slices cut from CT volumes by the engine, ``cfg.ct_per_step`` of them a step, weighted by ``cfg.ct_weight``.

    Stops early, after validating the current partial epoch, when ``should_stop()`` turns true ("stop requested") or
    the time budget ``cfg.minutes`` is spent ("time budget"), both checked after every step.
    """
    start = time.monotonic()
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    model.to(device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    images, targets = (t.to(device) for t in train_set.as_tensors(cfg.input_size))
    if reference is not None and cfg.reference_weight:
        reference_x, reference_p = (t.to(device) for t in reference)
    else:
        reference_x = reference_p = None
    extras = []  # (stream, slices a step, loss weight)
    if pseudo is not None and cfg.pseudo_per_step:
        extras.append((SliceStream(pseudo, cfg.input_size, device, gen), cfg.pseudo_per_step, cfg.pseudo_weight))
    if ct is not None and cfg.ct_per_step:
        extras.append((SliceStream(ct, cfg.input_size, device, gen), cfg.ct_per_step, cfg.ct_weight))
    weights = class_weights(cfg.class_weights, train_set.infection_fraction()).to(device)
    for name, p in model.named_parameters():  # no weight gradients for the layers that stay fixed
        p.requires_grad_(not cfg.trainable or in_stages(name, cfg.trainable))
    tuned = [p for p in model.parameters() if p.requires_grad]
    if not tuned:
        raise ValueError(f"no parameter belongs to any of {cfg.trainable}")
    optimiser = torch.optim.Adam(tuned, lr=cfg.lr, weight_decay=cfg.weight_decay)
    anchors = [p.detach().clone() for p in model.parameters()] if cfg.anchor_weight else []
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler(enabled=use_amp)

    history: list[EpochRecord] = []
    # epoch 0 is the starting point: a run that never beats it keeps the initial weights
    initial_val = last_val = evaluate_set(model, spec, val_set, device) if val_set else {}
    best_state, best_epoch, best_val = copy.deepcopy(model.state_dict()), 0, last_val
    best_score = last_val.get("infnet_dice", -1.0)
    stopped, step = "completed", 0
    for epoch in range(1, cfg.epochs + 1):
        epoch_start = time.monotonic()
        model.train()
        if cfg.freeze_batchnorm:
            _set_batchnorm_eval(model)
        order = torch.randperm(len(train_set), generator=gen, device=device)
        losses = []
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            if len(idx) < 2 and not cfg.freeze_batchnorm:
                continue  # BatchNorm cannot train on a batch of one
            x, y = augment(images[idx], targets[idx], cfg.augment, gen)
            sizes, loss_weights = [len(idx)], [1.0]
            for stream, count, weight in extras:
                x_extra, y_extra = augment(*stream.take(count), cfg.augment, gen)
                channels = max(x.shape[1], x_extra.shape[1])  # a 2D slice is its own neighbour slices
                x = torch.cat([x.expand(-1, channels, -1, -1), x_extra.expand(-1, channels, -1, -1)])
                y = torch.cat([y, y_extra])
                sizes.append(count)
                loss_weights.append(weight)
            lr = cfg.lr * (1 - _progress(step, total_steps, time.monotonic() - start, cfg.minutes)) ** 0.9
            for group in optimiser.param_groups:
                group["lr"] = lr
            with torch.autocast(device.type, enabled=use_amp):
                outputs = model(normalise_input(x, spec.mean, spec.std))
            loss, first = x.new_zeros(()), 0
            for size, weight in zip(sizes, loss_weights):  # each group's loss, in the batch's order
                part = slice(first, first + size)
                loss = loss + weight * segmentation_loss(tuple(o[part] for o in outputs), y[part], spec, weights,
                                                         cfg.dice_weight, cfg.tversky_beta)
                first += size
            if reference_x is not None:
                pick = torch.randint(len(reference_x), (cfg.batch_size,), generator=gen, device=device)
                with torch.autocast(device.type, enabled=use_amp):
                    reference_logits = model(normalise_input(reference_x[pick], spec.mean, spec.std))[0]
                loss = loss + cfg.reference_weight * distillation_loss(reference_logits, reference_p[pick], spec)
            if anchors:
                loss = loss + cfg.anchor_weight / 2 * sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(),
                                                                                                anchors))
            optimiser.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            losses.append(loss.item())
            step += 1
            if should_stop and should_stop():
                stopped = "stop requested"
                break
            if cfg.minutes is not None and time.monotonic() - start > cfg.minutes * 60:
                stopped = "time budget"
                break
        last_val = evaluate_set(model, spec, val_set, device) if val_set else {}
        score = last_val.get("infnet_dice", -float(np.mean(losses)) if losses else -1.0)
        if score > best_score:
            best_score, best_epoch, best_val = score, epoch, last_val
            best_state = copy.deepcopy(model.state_dict())
        record = EpochRecord(epoch, step, float(np.mean(losses)) if losses else float("nan"), lr,
                             time.monotonic() - epoch_start, last_val.get("infnet_dice", float("nan")),
                             last_val.get("dice", float("nan")))
        history.append(record)
        if on_epoch:
            on_epoch(record)
        if stopped != "completed":
            break
        if cfg.patience is not None and epoch - best_epoch >= cfg.patience:
            stopped = "early stopping"
            break
    return TrainResult({k: v.cpu() for k, v in best_state.items()}, best_epoch, best_val, last_val, initial_val,
                       history, stopped, time.monotonic() - start)
