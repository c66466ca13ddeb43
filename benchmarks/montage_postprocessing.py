"""Before/after pictures of the 3D post-processing on a real CT: the slices where it matters most.

    python benchmarks/montage_postprocessing.py normal001 -o build/normal001-postprocessing.png
    python benchmarks/montage_postprocessing.py P001 --clear-slices -o build/P001-clear-postprocessing.png

The model (default: the shipped one) segments the case twice: without post-processing (top row) and with its card's
(bottom row). The columns are the slices with the most infection before post-processing; with --clear-slices, only
slices that the radiologists labelled clear. Lungs are outlined in blue, infection is red.
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

from LightSegLib import registry  # noqa: E402
from LightSegLib.engine import Segmentation, Segmenter  # noqa: E402
from LightSegLib.evaluation import MIN_INFECTED_AREA_MM2, infected_area_per_slice, read_slice_labels  # noqa: E402
from LightSegLib.io import INFECTION, read_image  # noqa: E402
from LightSegLib.montage import render_slice  # noqa: E402
from LightSegLib.postprocess import PostProcessing  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "covid-ct-md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", help="a case folder under ../shared/data/covid-ct-md")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--clear-slices", action="store_true", help="only slices labelled clear")
    parser.add_argument("--count", type=int, default=6)
    args = parser.parse_args()

    image = read_image(DATA / args.case).image
    card = registry.resolve(args.model)
    before = Segmenter(card, "cpu", postprocessing=PostProcessing()).segment_volume(image)
    after = Segmenter(card, "cpu").segment_volume(image)
    picks = most_infected_slices(before, image, args.count,
                                 DATA / f"{args.case}_slice_labels.csv" if args.clear_slices else None)
    view = before.view
    hu = view.to_canonical(sitk.GetArrayViewFromImage(image))
    lungs = before.lungs.lungs
    rows = []
    for result in (before, after):
        labels = view.to_canonical(sitk.GetArrayViewFromImage(result.labels))
        rows.append(np.concatenate([crop_to_lungs(render_slice(hu[z], labels[z] == INFECTION, lungs[z]), lungs)
                                    for z in picks], axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(args.output)
    print(f"{args.output}: slices {[int(z) for z in picks]} (canonical index, from the lowest up); "
          f"removed: {after.postprocessing['removed']}")


def most_infected_slices(result: Segmentation, image: sitk.Image, count: int,
                         slice_labels: Path | None = None, labelled_infected: bool = False) -> list[int]:
    """The canonical indices of the ``count`` slices with the most infection in ``result`` (at least the slice-call
    area), in order; with a slice-label CSV, only among the slices the radiologists labelled clear (or, with
    ``labelled_infected``, infected)."""
    area, positions = infected_area_per_slice(result, image)
    candidates = area >= MIN_INFECTED_AREA_MM2
    if slice_labels is not None:
        locations, visible = read_slice_labels(slice_labels)
        wanted = np.zeros(len(area), bool)
        for location in locations[visible == labelled_infected]:
            wanted[int(np.argmin(np.abs(positions - location)))] = True
        candidates &= wanted
    return sorted(int(z) for z in np.flatnonzero(candidates)[np.argsort(-area[candidates])][:count])


def crop_to_lungs(tile: np.ndarray, lungs: np.ndarray) -> np.ndarray:
    """The tile cut to the lungs' box over the whole scan, so every column shows the same region."""
    rows, cols = np.flatnonzero(lungs.any(axis=(0, 2))), np.flatnonzero(lungs.any(axis=(0, 1)))
    return tile[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


if __name__ == "__main__":
    main()
