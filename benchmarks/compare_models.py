"""Every LightSeg architecture trained the same way and compared in one table.

    python benchmarks/compare_models.py [--minutes 6] [--archs miniseg,ulite,...] [--json results.json]
    python benchmarks/compare_models.py --speed-only      (parameters, GMAC and speed; no training)

Each architecture is trained by `lightseg train` from scratch on the 50 labelled COVID-SemiSeg slices with the same
validation fold (10 slices, seed 0), seed and wall-clock budget (the poly learning rate anneals over the budget).
Speed: the plain eager fp32 forward at batch 1 on a 1-channel 512 x 512 input (the reference protocol), and the
engine's settings (BatchNorm folded, channels_last, batch 8 on CPU / 32 with fp16 on CUDA) at the model's input size.
GMAC: multiply-accumulates of one 512 x 512 slice counted by torch's FlopCounterMode (convolutions, linear layers and
attention; norms, interpolation and element-wise operations are not counted).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_inference import slices_per_second  # noqa: E402
from LightSegLib.cards import ModelCard  # noqa: E402
from LightSegLib.models import build_model, count_parameters  # noqa: E402
from LightSegLib.models.inference import inference_form  # noqa: E402
from LightSegLib.training.recipe import ARCH_DEFAULTS  # noqa: E402

SEMISEG = REPO.parent / "shared" / "data" / "covid-semiseg" / "train"


def inference_network(arch: str) -> torch.nn.Module:
    recipe = ARCH_DEFAULTS[arch]
    return build_model(recipe["architecture"], recipe["config"]).eval()


def gmac_at_512(model: torch.nn.Module, channels: int) -> float:
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.zeros(1, channels, 512, 512))
    return counter.get_total_flops() / 2 / 1e9


def speed_row(arch: str, device: torch.device, seconds: float) -> dict:
    """Reference (eager, batch 1, 512) and engine (folded, channels_last, batched, input size) throughput."""
    torch.manual_seed(0)
    model = inference_network(arch).to(device)
    channels = ARCH_DEFAULTS[arch]["config"]["in_channels"]
    size = ARCH_DEFAULTS[arch]["input_size"]
    cuda = device.type == "cuda"
    fast = inference_form(model).to(device, memory_format=torch.channels_last)
    return {
        "reference_512": slices_per_second(model, 1, channels, 512, device, seconds),
        "engine_input_size": slices_per_second(fast, 32 if cuda else 8, channels, size, device, seconds, True, cuda),
    }


def train_row(arch: str, minutes: float, out_dir: Path, threads: int) -> dict:
    """Train with `lightseg train` under the time budget; validation figures and time from the saved card."""
    name = f"compare-{arch}"
    command = [sys.executable, "-m", "LightSegLib", "train", "--arch", arch, "--images", str(SEMISEG / "images"),
               "--masks", str(SEMISEG / "masks"), "--name", name, "-o", str(out_dir), "--epochs", "1000",
               "--minutes", str(minutes), "--val-fraction", "0.2", "--seed", "0", "--threads", str(threads),
               "--force"]
    log = out_dir / f"{name}.log"
    with open(log, "w") as f:
        subprocess.run(command, check=True, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
    card = ModelCard.load(out_dir / f"{name}.json")
    return {
        "val_infnet_dice": card.validation["kept"]["infnet_dice"],
        "val_dice": card.validation["kept"]["dice"],
        "last_infnet_dice": card.validation["last_epoch"]["infnet_dice"],
        "epochs": len(card.training["history"]),
        "train_minutes": card.training["seconds"] / 60,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default=",".join(ARCH_DEFAULTS), help="comma-separated --arch names")
    parser.add_argument("--minutes", type=float, default=6.0, help="training budget per architecture")
    parser.add_argument("--seconds", type=float, default=4.0, help="timing per speed measurement")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, help="keep the trained models here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("--speed-only", action="store_true", help="skip training (validation columns stay empty)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    archs = args.archs.split(",")
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])

    rows = {}
    for arch in archs:
        model = inference_network(arch)
        rows[arch] = {"parameters": count_parameters(model),
                      "gmac_512": gmac_at_512(model, ARCH_DEFAULTS[arch]["config"]["in_channels"])}
        for device in devices:
            rows[arch].update({f"{device.type}_{k}": v for k, v in speed_row(arch, device, args.seconds).items()})
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.out or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        for arch in archs:
            if not args.speed_only:
                rows[arch].update(train_row(arch, args.minutes, out_dir, args.threads))
            print(f"{arch}: {json.dumps(rows[arch])}", flush=True)

    gpu = "cuda" if torch.cuda.is_available() else None
    print(f"\nCPU: {torch.get_num_threads()} threads, torch {torch.__version__}; GPU: "
          f"{torch.cuda.get_device_name() if gpu else 'none on this machine'}; training budget {args.minutes:g} min "
          "each, from scratch, 40 training / 10 validation slices (seed 0)\n")
    print("| --arch | parameters | GMAC @512² | CPU slices/s, eager b1 @512 | CPU slices/s, engine @input | "
          "GPU slices/s, engine @input | val Inf-Net Dice | val Dice@0.5 | epochs | training min |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for arch, r in rows.items():
        gpu_speed = f"{r['cuda_engine_input_size']:.0f}" if gpu else "n/a"
        trained = ("| - | - | - | - |" if args.speed_only else
                   f"| {r['val_infnet_dice']:.3f} | {r['val_dice']:.3f} | {r['epochs']} | {r['train_minutes']:.1f} |")
        print(f"| {arch} | {r['parameters']:,} | {r['gmac_512']:.3f} | {r['cpu_reference_512']:.1f} | "
              f"{r['cpu_engine_input_size']:.1f} | {gpu_speed} {trained}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
