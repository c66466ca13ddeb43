"""``lightseg compile``: build a model's network for this computer's CPU once, so later segmentations run faster."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compile", help="compile a model's network for this CPU, once per computer and model: "
                                       "bfloat16 where the CPU has the instructions (up to 1.35x the eager network, "
                                       "one to two minutes), else ONNX Runtime in fp32 (about 1.2x, 20-30 s)")
    p.add_argument("--model", help="model id or card path (default: the default model); a model with a confirming "
                                   "network gets both compiled")
    p.add_argument("--force", action="store_true", help="rebuild an existing compiled form")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    from .. import registry
    from ..compiled import compile_network, networks_of

    for card in networks_of(registry.resolve(args.model)):
        start = time.perf_counter()
        path = compile_network(card, args.force)
        print(f"{card.id}: {path} ({time.perf_counter() - start:.0f} s)")
    return 0
