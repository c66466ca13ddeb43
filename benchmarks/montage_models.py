"""Before/after pictures of two models on a real CT: the slices where the first model calls the most infection.

    python benchmarks/montage_models.py LIDC-IDRI-0003 --models miniseg-covid build/cand/neg.json -o build/m.png

Each row is one model (the first is "before"); the columns are the slices with the most infection under the first
model (with --clear-slices or --infected-slices, only slices the radiologists labelled so). Lungs are outlined in
blue, infection is red; annotated nodules or tumours (NAME_lesions.nrrd) are shown in yellow. Cases are folders of
../shared/data/covid-ct-md or ../shared/data/public-cts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from LightSegLib import registry  # noqa: E402
from LightSegLib.engine import Segmenter  # noqa: E402
from LightSegLib.io import INFECTION, read_image  # noqa: E402
from LightSegLib.montage import render_slice  # noqa: E402
from LightSegLib.report import volume_measurements  # noqa: E402
from LightSegLib.training.ct_slices import read_lesions  # noqa: E402
from montage_postprocessing import crop_to_lungs, most_infected_slices  # noqa: E402
from volume_benchmark import DATA, case_folders  # noqa: E402

LESION_COLOUR = np.array([255, 220, 0], np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", help="a case folder name under ../shared/data/covid-ct-md or public-cts")
    parser.add_argument("--models", nargs=2, required=True, help="before and after: model ids or card paths")
    parser.add_argument("-o", "--output", type=Path, required=True)
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--clear-slices", action="store_true", help="only slices labelled clear")
    labels.add_argument("--infected-slices", action="store_true", help="only slices labelled infected")
    parser.add_argument("--count", type=int, default=6)
    args = parser.parse_args()

    folder = case_folders(DATA)[args.case]
    image = read_image(folder).image
    results = [Segmenter(registry.resolve(m), "cpu").segment_volume(image) for m in args.models]
    labelled = args.clear_slices or args.infected_slices
    picks = most_infected_slices(results[0], image, args.count,
                                 folder.parent / f"{args.case}_slice_labels.csv" if labelled else None,
                                 labelled_infected=args.infected_slices)
    view = results[0].view
    hu = view.to_canonical(sitk.GetArrayViewFromImage(image))
    lungs = results[0].lungs.lungs
    lesions = _lesions(folder, image, view)
    rows = []
    for result in results:
        labels = view.to_canonical(sitk.GetArrayViewFromImage(result.labels))
        tiles = []
        for z in picks:
            tile = render_slice(hu[z], labels[z] == INFECTION, lungs[z])
            if lesions is not None:
                tile[lesions[z]] = LESION_COLOUR
            tiles.append(crop_to_lungs(tile, lungs))
        rows.append(np.concatenate(tiles, axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(args.output)
    found = ", ".join(f"{m} {volume_measurements(r)['infection_ml']:.1f} mL" for m, r in zip(args.models, results))
    print(f"{args.output}: slices {picks} (canonical index, from the lowest up); infection {found}")


def _lesions(folder: Path, image: sitk.Image, view) -> np.ndarray | None:
    """The case's annotated lesions on the canonical grid (their outline only), or None."""
    path = folder.parent / f"{folder.name}_lesions.nrrd"
    if not path.is_file():
        return None
    from scipy import ndimage

    mask = view.to_canonical(read_lesions(path, image))
    return mask & ~ndimage.binary_erosion(mask, np.ones((1, 3, 3), bool))


if __name__ == "__main__":
    main()
