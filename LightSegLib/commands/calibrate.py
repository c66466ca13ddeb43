"""``lightseg calibrate-window``: measure the HU window of a CT against the training slices."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate-window", help="measure the HU window that maps a CT into the training slices' domain")
    p.add_argument("--images", type=Path, required=True, help="the training slices (8-bit)")
    p.add_argument("--volume", type=Path, required=True, help="a chest CT in HU (file or DICOM folder)")
    p.add_argument("-o", "--output", type=Path, help="write the result as JSON (for 'lightseg train --hu-window-from')")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from ..calibration import crop_hu_values, fit_window, training_quantiles
    from ..io import check_output_path, read_image, write_atomically
    from ..training.slices import read_gray, require_image_files

    if args.output:
        check_output_path(args.output, (".json",), args.force)
    images = [read_gray(p) for p in require_image_files(args.images)]
    values, slices = crop_hu_values(read_image(args.volume).image)
    fit = fit_window(training_quantiles(images), values)
    result = {"level": fit.level, "width": fit.width, "distance": round(fit.distance, 5),
              "reference_distances": {k: round(v, 5) for k, v in fit.reference_distances.items()},
              "method": fit.method(args.volume.name, slices), "training_images": len(images),
              "volume": str(args.volume)}
    print(f"HU window: level {fit.level:.0f}, width {fit.width:.0f} (distance {fit.distance:.4f}; "
          + ", ".join(f"{k} {v:.4f}" for k, v in fit.reference_distances.items()) + ")")
    if args.output:
        write_atomically(args.output, lambda tmp: tmp.write_text(json.dumps(result, indent=2) + "\n"))
        print(f"wrote {args.output}")
    return 0
