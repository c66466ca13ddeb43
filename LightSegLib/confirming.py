"""The confirming network of a card's ``confirm_with`` rule (``postprocess.py``).

It is loaded beside the model's own network and runs on the same lung crops, after the model's own pass, on the slices
that hold infection and those next to its own calls (``engine.py``); its calls, cleaned by its own card's rules,
decide which infection components of the model stay. It must not need confirming itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import registry
from .cards import ModelCard, load_network
from .compiled import load_compiled
from .errors import LightSegError
from .models.inference import inference_form
from .network import InputSpec
from .postprocess import PostProcessing


@dataclass
class ConfirmingNetwork:
    card: ModelCard
    spec: InputSpec
    model: torch.nn.Module
    postprocessing: PostProcessing  # applied to its own calls before they confirm anything

    @classmethod
    def load(cls, model_id: str, device: torch.device, compiled: bool = True) -> "ConfirmingNetwork":
        """The confirming model ``model_id`` (bundled or user store), ready on ``device``; its compiled form when
        ``compiled`` and ``lightseg compile`` built one."""
        card = registry.resolve(model_id)
        settings = card.postprocessing_settings()
        if settings.confirm_with:
            raise LightSegError("a confirming model cannot need confirming itself", card.path)
        if card.hu_window is None:
            raise LightSegError("a confirming model needs an HU window (it segments CT volumes)", card.path)
        spec = card.input_spec()
        model = load_compiled(card, spec, device)[0] if compiled else None
        if model is None:
            model = inference_form(load_network(card)).to(device, memory_format=torch.channels_last)
        return cls(card, spec, model, settings)
