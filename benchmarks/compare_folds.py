"""Two cross-validation runs of ``fold_variance.py --json``, compared slice by slice.

    python benchmarks/compare_folds.py build/eval/cv5-stage2.json build/eval/cv5-mix.json

Both runs must have scored the same slices (the same folds). Prints each run's pooled per-image mean, then the
paired difference (second minus first) with its standard error and how many slices the second run scores higher:
pairing removes the slice-to-slice spread that dominates each run's own standard error.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from fold_variance import pooled

KEYS = (("infnet_dice", "Inf-Net mean Dice"), ("dice", "Dice@0.5"))


def per_image(rows: list[dict]) -> dict[str, dict]:
    return {image["image"]: image for row in rows for image in row["per_image"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="the reference run's --json")
    parser.add_argument("second", type=Path, help="the run compared with it")
    args = parser.parse_args()
    runs = [json.loads(path.read_text()) for path in (args.first, args.second)]
    first, second = (per_image(rows) for rows in runs)
    if first.keys() != second.keys():
        parser.error(f"the runs scored different slices: {sorted(first.keys() ^ second.keys())}")
    figures = [pooled(rows) for rows in runs]
    print(f"{len(first)} slices: {args.first.name} against {args.second.name}")
    print(f"{'measure':<18} {'first':>8} {'second':>8} {'difference':>11} {'paired SE':>10} {'second higher':>14}")
    for key, label in KEYS:
        differences = [second[name][key] - first[name][key] for name in first]
        error = statistics.stdev(differences) / len(differences) ** 0.5
        higher = sum(d > 0 for d in differences)
        print(f"{label:<18} {figures[0][key]:8.4f} {figures[1][key]:8.4f} {statistics.mean(differences):+11.4f} "
              f"{error:10.4f} {higher:>9} of {len(differences)}")


if __name__ == "__main__":
    main()
