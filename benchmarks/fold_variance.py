"""How much does one 10-slice validation fold say? The same recipe on several random 40/10 splits of the 50 slices.

    python benchmarks/fold_variance.py [--init build/models/miniseg-pseudo.json] [--seeds 0 1 2 3 4] [--epochs 100]
                                       [--extra TRAIN_OPTION ...]

Each seed draws its own validation fold (and training order) and runs `lightseg train` from the same starting
weights. The table shows each split's best-epoch and last-epoch validation Inf-Net Dice and Dice@0.5, then their
mean and standard deviation over the splits: the spread a single fold's figure carries.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "covid-semiseg" / "train"


def train_split(seed: int, args: argparse.Namespace, out: Path) -> dict:
    command = [sys.executable, "-m", "LightSegLib", "train", "--arch", "miniseg", "--images", str(DATA / "images"),
               "--masks", str(DATA / "masks"), "--name", f"split{seed}", "-o", str(out), "--init", str(args.init),
               "--epochs", str(args.epochs), "--lr", str(args.lr), "--val-fraction", "0.2", "--seed", str(seed),
               "--threads", str(args.threads), *args.extra]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"train failed for seed {seed}: {result.stderr.strip()}")
    card = json.loads((out / f"split{seed}.json").read_text())
    history = card["training"]["history"]
    best = max(history, key=lambda e: e["val_infnet_dice"])
    return {"seed": seed, "validation": card["training"]["validation_names"], "best_infnet": best["val_infnet_dice"],
            "best_dice": best["val_dice"], "last_infnet": history[-1]["val_infnet_dice"],
            "last_dice": history[-1]["val_dice"], "minutes": card["training"]["seconds"] / 60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", type=Path, default=REPO / "build" / "models" / "miniseg-pseudo.json")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="further lightseg train options")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            rows.append(train_split(seed, args, Path(tmp)))
            row = rows[-1]
            print(f"seed {seed}: best {row['best_infnet']:.4f} / {row['best_dice']:.4f}, last {row['last_infnet']:.4f} / "
                  f"{row['last_dice']:.4f} ({row['minutes']:.1f} min); validation {' '.join(row['validation'])}",
                  flush=True)
    print(f"\n{args.epochs} epochs at lr {args.lr} from {args.init.name} {' '.join(args.extra)}")
    print(f"{'split (seed)':<14} {'best InfNet':>12} {'best Dice':>10} {'last InfNet':>12} {'last Dice':>10}")
    for row in rows:
        print(f"{row['seed']:<14} {row['best_infnet']:12.4f} {row['best_dice']:10.4f} {row['last_infnet']:12.4f} "
              f"{row['last_dice']:10.4f}")
    for name, aggregate in (("mean", statistics.mean), ("sd", statistics.stdev if len(rows) > 1 else lambda v: 0.0)):
        values = [aggregate([r[k] for r in rows]) for k in ("best_infnet", "best_dice", "last_infnet", "last_dice")]
        print(f"{name:<14} {values[0]:12.4f} {values[1]:10.4f} {values[2]:12.4f} {values[3]:10.4f}")


if __name__ == "__main__":
    main()
