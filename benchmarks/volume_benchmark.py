"""Models on every real HU chest CT in ../shared/data (covid-ct-md, public-cts), with the release gate a new default
must pass.

    python benchmarks/volume_benchmark.py --models miniseg-covid                       # the table
    python benchmarks/volume_benchmark.py --models miniseg-covid build/cand/miniseg-covid.json --gate
    python benchmarks/volume_benchmark.py --models 1b2c3d4:miniseg-covid miniseg-covid --postprocessing '{}'

A model is an id, a card path, or REVISION:ID for a bundled model as committed at a git revision (its card and weights
are read with `git show`), so earlier defaults can be compared without keeping copies of them. Each model runs as
`lightseg segment` runs it (the card's test-time flips and 3D post-processing, unless --test-time-flips or
--postprocessing replace them for every model), with its eager fp32 network; MODEL+compiled runs the compiled
network that `lightseg compile` builds for this CPU (built first where this LightSeg home has none).

Per model and case: for a case with radiologists' slice labels (P001: COVID-19; cap002: other pneumonia), the ROC AUC
of the predicted infected area per slice with a 95 % block-bootstrap interval, and sensitivity and specificity of
"slice infected" (at least 20 mm^2 predicted); for a CT without infection (normal001 and the four public CTs), the
infection volume found, the slices called and, where a lesions file (NAME_lesions.nrrd) marks nodules or a tumour,
the infection more than 10 mm from any lesion (the false positives); for every case the infection volume, the seconds
from reading the DICOM series to the label map, and whether the model was trained on that CT (its card's
training.trained_on_cts): a figure on a CT the model learnt from is not evidence.
Neighbouring slices are not independent (a lesion spans several), so the intervals resample blocks of consecutive
slices (--block, default 10 slices, 2 cm here); shorter blocks give narrower, over-confident intervals.

Then every model after the first is compared with it (AUC change with its interval, slices whose call changed) and
checked by the release gate (README, "Models"): on each labelled case the AUC change's interval not wholly below 0, net
at most 3 infected slices losing their call and net at most 3 clear slices gaining one; P001's infection volume within
25 %; at most 1 mL more false-positive infection than the reference on each CT without infection. With --gate the exit
status is 1 if any model fails; bad input (an unknown model, revision or file) is one line on stderr and exit status 2.
The targets for the shipped default are printed for every model (not part of the gate), each counted only on a CT the
model was not trained on.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from LightSegLib import registry  # noqa: E402
from LightSegLib.compiled import compile_network, networks_of  # noqa: E402
from LightSegLib.commands.common import parse_flips_option  # noqa: E402
from LightSegLib.engine import Segmenter  # noqa: E402
from LightSegLib.errors import LightSegError  # noqa: E402
from LightSegLib.evaluation import (MIN_INFECTED_AREA_MM2, area_at_labelled_slices,  # noqa: E402
                                    infected_area_per_slice, read_slice_labels, slice_level_agreement)
from LightSegLib.io import read_image  # noqa: E402
from LightSegLib.metrics import roc_auc  # noqa: E402
from LightSegLib.postprocess import PostProcessing  # noqa: E402
from LightSegLib.report import volume_measurements  # noqa: E402

DATA = REPO.parent / "shared" / "data"
COLLECTIONS = ("covid-ct-md", "public-cts")  # folders of --data whose sub-folders are the cases
LESION_MARGIN_MM = 10.0  # infection within this distance of an annotated lesion is not counted as a false positive
VOLUME_CASE = "P001"  # the COVID-19 case whose infection volume the gate keeps within GATE_MAX_VOLUME_CHANGE
GATE_MAX_NET_INFECTED_LOST = 3
GATE_MAX_NET_CLEAR_GAINED = 3
GATE_MAX_VOLUME_CHANGE = 0.25
GATE_MAX_NORMAL_ML_GAINED = 1.0  # on every CT without infection
MAX_FALSE_POSITIVE_ML = 5.0  # the target on every CT without infection
COMPILED = "+compiled"  # a model name's suffix: run its compiled form
TARGETS = {"P001 specificity": ("P001", "specificity", ">=", 0.80),
           "P001 sensitivity": ("P001", "sensitivity", ">=", 0.95),
           "cap002 slice AUC": ("cap002", "auc", ">=", 0.85)}


@dataclass
class Case:
    """A CT of the benchmark: its folder and, where the dataset has them, its slice labels."""

    name: str
    folder: Path
    locations: np.ndarray | None = None  # labelled slice positions (mm), label order
    visible: np.ndarray | None = None  # infection visible on the labelled slice
    lesions: Path | None = None  # a CT without infection: its nodules or tumour (1 = lesion, on the CT's grid)

    @property
    def labelled(self) -> bool:
        return self.visible is not None


def case_folders(data: Path) -> dict[str, Path]:
    """Every case of the data root: the sub-folders of its collections, by name."""
    folders = {}
    for collection in COLLECTIONS:
        if (data / collection).is_dir():
            folders.update({p.name: p for p in sorted((data / collection).iterdir()) if p.is_dir()})
    return folders


def load_cases(names: list[str] | None, data: Path) -> list[Case]:
    """The benchmark's cases (all of them for ``names`` None); a missing case is a one-line error. A case with a
    slice-label CSV beside it is labelled; every other case is a CT without infection."""
    folders = case_folders(data)
    cases = []
    for name in names or list(folders):
        if name not in folders:
            raise LightSegError(f"no such case folder under {', '.join(COLLECTIONS)}", data / name)
        folder = folders[name]
        labels = folder.parent / f"{name}_slice_labels.csv"
        lesions = folder.parent / f"{name}_lesions.nrrd"
        case = Case(name, folder, lesions=lesions if lesions.is_file() else None)
        if labels.is_file():
            case.locations, case.visible = read_slice_labels(labels)
        cases.append(case)
    if not cases:
        raise LightSegError(f"no case folders under {', '.join(COLLECTIONS)}", data)
    return cases


def trained_on(card) -> set[str]:
    """The CTs (folder names) a model's weights learnt from, as its card records them (none for older cards), and
    those of the network that confirms its components, if any."""
    cts = set((card.training or {}).get("trained_on_cts", []))
    confirm_with = card.postprocessing_settings().confirm_with
    return cts | trained_on(registry.resolve(confirm_with)) if confirm_with else cts


def outside_lesions_ml(result, image, lesions_path: Path) -> float:
    """Infection (mL) more than LESION_MARGIN_MM from every voxel of the lesions file (resampled onto the CT)."""
    import SimpleITK as sitk
    from scipy import ndimage

    from LightSegLib.io import INFECTION
    from LightSegLib.training.ct_slices import read_lesions

    infection = sitk.GetArrayViewFromImage(result.labels) == INFECTION
    if not infection.any():
        return 0.0
    lesion = read_lesions(lesions_path, image)
    spacing = image.GetSpacing()[::-1]
    distance = ndimage.distance_transform_edt(~lesion, sampling=spacing) if lesion.any() else None
    far = infection if distance is None else infection & (distance > LESION_MARGIN_MM)
    return float(far.sum() * np.prod(spacing) / 1000.0)


def model_at_revision(spec: str, into: Path) -> str:
    """The card path of ``REVISION:ID``, a bundled model as committed at a git revision, written under ``into``."""
    revision, model_id = spec.split(":", 1)
    folder = into / revision
    folder.mkdir(parents=True, exist_ok=True)
    card_bytes = git_show(revision, f"Resources/Models/{model_id}.json")
    (folder / f"{model_id}.json").write_bytes(card_bytes)
    card = json.loads(card_bytes)
    (folder / card["weights_file"]).write_bytes(git_show(revision, f"Resources/Models/{card['weights_file']}"))
    return str(folder / f"{model_id}.json")


def git_show(revision: str, path: str) -> bytes:
    """A file's bytes as committed at ``revision`` in this repository."""
    shown = subprocess.run(["git", "-C", str(REPO), "show", f"{revision}:{path}"], capture_output=True)
    if shown.returncode != 0:
        problem = shown.stderr.decode().strip().splitlines()[-1:] or ["not in git history"]
        raise LightSegError(problem[0], f"{revision}:{path}")
    return shown.stdout


def score_case(segmenter: Segmenter, case: Case) -> tuple[np.ndarray | None, dict]:
    """Read and segment one case; the predicted area per labelled slice (None if unlabelled) and its table cell."""
    tic = time.perf_counter()
    image = read_image(case.folder).image
    result = segmenter.segment_volume(image)
    seconds = time.perf_counter() - tic
    area, positions = infected_area_per_slice(result, image)
    cell = {"infection_ml": volume_measurements(result)["infection_ml"], "seconds": round(seconds, 2),
            "removed": result.postprocessing["removed"], "trained_on": case.name in trained_on(segmenter.card)}
    if not case.labelled:
        cell["slices_called"] = int((area >= MIN_INFECTED_AREA_MM2).sum())
        cell["false_positive_ml"] = (outside_lesions_ml(result, image, case.lesions) if case.lesions
                                     else cell["infection_ml"])
        return None, cell
    agreement = slice_level_agreement(area, positions, case.locations, case.visible)
    cell.update(auc=agreement["auc_infected_area"], sensitivity=agreement["sensitivity"],
                specificity=agreement["specificity"])
    return area_at_labelled_slices(area, positions, case.locations), cell


def block_bootstrap_auc(scores: list[np.ndarray], visible: np.ndarray, locations: np.ndarray, block: int,
                        draws: int, seed: int) -> np.ndarray:
    """AUC of each model on ``draws`` resamplings of consecutive-slice blocks, shape (draws, models)."""
    order = np.argsort(locations)
    blocks = [order[i:i + block] for i in range(0, len(order), block)]
    rng = np.random.default_rng(seed)
    out = np.full((draws, len(scores)), np.nan)
    for d in range(draws):
        picked = np.concatenate([blocks[i] for i in rng.integers(len(blocks), size=len(blocks))])
        out[d] = [roc_auc(s[picked], visible[picked]) for s in scores]
    return out


def changed_calls(locations: np.ndarray, visible: np.ndarray, reference: np.ndarray, area: np.ndarray) -> list[dict]:
    """The labelled slices, in position order, that one model calls infected and the reference does not, or back."""
    changed = (area >= MIN_INFECTED_AREA_MM2) != (reference >= MIN_INFECTED_AREA_MM2)
    return [{"position_mm": float(locations[i]), "label": "infected" if visible[i] else "clear",
             "reference_mm2": float(reference[i]), "model_mm2": float(area[i])}
            for i in np.argsort(locations) if changed[i]]


def call_change_counts(changes: list[dict]) -> dict:
    """How many infected and clear slices gained or lost their call, from ``changed_calls``."""
    def count(label: str, now_called: bool) -> int:
        return sum(c["label"] == label and (c["model_mm2"] >= MIN_INFECTED_AREA_MM2) == now_called for c in changes)
    return {"infected_slices_gained": count("infected", True), "infected_slices_lost": count("infected", False),
            "clear_slices_newly_called": count("clear", True), "clear_slices_no_longer_called": count("clear", False)}


def labelled_case_failures(case: str, candidate: dict) -> list[str]:
    """Why a labelled case's comparison (AUC change interval and call counts) fails the release gate."""
    failures = []
    if candidate["auc_change_interval"][1] < 0:
        low, high = candidate["auc_change_interval"]
        failures.append(f"{case}: AUC change interval {low:+.3f} to {high:+.3f} is wholly below 0")
    net_infected_lost = candidate["infected_slices_lost"] - candidate["infected_slices_gained"]
    if net_infected_lost > GATE_MAX_NET_INFECTED_LOST:
        failures.append(f"{case}: net {net_infected_lost} infected slices lose their call "
                        f"(at most {GATE_MAX_NET_INFECTED_LOST})")
    net_clear_gained = candidate["clear_slices_newly_called"] - candidate["clear_slices_no_longer_called"]
    if net_clear_gained > GATE_MAX_NET_CLEAR_GAINED:
        failures.append(f"{case}: net {net_clear_gained} clear slices gain a call "
                        f"(at most {GATE_MAX_NET_CLEAR_GAINED})")
    return failures


def volume_failures(candidate: dict, reference: dict) -> list[str]:
    """The gate's volume criteria: the COVID-19 case's infection volume, and the false positives found in each CT
    without infection (cells with a ``false_positive_ml``)."""
    failures = []
    if VOLUME_CASE in candidate and reference[VOLUME_CASE]["infection_ml"] > 0:
        change = candidate[VOLUME_CASE]["infection_ml"] / reference[VOLUME_CASE]["infection_ml"] - 1
        if abs(change) > GATE_MAX_VOLUME_CHANGE:
            failures.append(f"{VOLUME_CASE}: infection volume changes by {change:+.1%} "
                            f"(at most {GATE_MAX_VOLUME_CHANGE:.0%})")
    for case, cell in candidate.items():
        if isinstance(cell, dict) and "false_positive_ml" in cell and case in reference:
            gained = cell["false_positive_ml"] - reference[case]["false_positive_ml"]
            if gained > GATE_MAX_NORMAL_ML_GAINED:
                failures.append(f"{case}: {gained:+.1f} mL of infection in a CT without infection "
                                f"(at most {GATE_MAX_NORMAL_ML_GAINED:+.0f})")
    return failures


def target_verdicts(row: dict) -> dict[str, bool]:
    """The shipped default's targets that this model's row can be checked against, each met or not: only on CTs the
    model was not trained on (a figure on a training CT is no evidence)."""
    verdicts = {}
    for case, cell in row.items():
        if isinstance(cell, dict) and "false_positive_ml" in cell and not cell.get("trained_on"):
            verdicts[f"{case} at most {MAX_FALSE_POSITIVE_ML:g} mL"] = cell["false_positive_ml"] <= MAX_FALSE_POSITIVE_ML
    for name, (case, key, relation, limit) in TARGETS.items():
        if case in row and not row[case].get("trained_on"):
            value = row[case][key]
            verdicts[name] = value <= limit if relation == "<=" else value >= limit
    return verdicts


def main() -> None:
    """Bad input is one line on stderr and exit status 2; a failed gate is exit status 1."""
    try:
        benchmark(parse_args())
    except LightSegError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True,
                        help="model ids, card paths or REVISION:ID, each optionally +compiled; the first is the "
                             "reference")
    parser.add_argument("--cases", nargs="+", help="case folder names (default: every case under --data)")
    parser.add_argument("--data", type=Path, default=DATA, help=f"holds {' and '.join(COLLECTIONS)}")
    parser.add_argument("--test-time-flips", help="replaces every card's: horizontal,vertical or none")
    parser.add_argument("--postprocessing", help="replaces every card's, as JSON ('{}' for none)")
    parser.add_argument("--block", type=int, default=10, help="consecutive slices per bootstrap block")
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--gate", action="store_true", help="exit 1 unless every model passes the release gate")
    args = parser.parse_args()
    if args.gate and len(args.models) < 2:
        parser.error("--gate needs a reference and at least one model to compare with it")
    return args


def overrides(args: argparse.Namespace) -> dict:
    """Segmenter keyword arguments from --test-time-flips and --postprocessing; a bad value is a one-line error."""
    kwargs = {}
    if args.test_time_flips is not None:
        kwargs["test_time_flips"] = parse_flips_option(args.test_time_flips)
    if args.postprocessing is not None:
        try:
            kwargs["postprocessing"] = PostProcessing.from_card(json.loads(args.postprocessing))
        except (ValueError, TypeError) as exc:
            raise LightSegError(f"not valid postprocessing settings ({exc})", args.postprocessing) from None
    return kwargs


def make_segmenter(model: str | Path, compiled: bool, kwargs: dict) -> Segmenter:
    """The model's segmenter with its eager network, or with ``compiled`` its compiled form (and its confirming
    network's), built first when missing."""
    card = registry.resolve(str(model))
    if compiled:
        for each in networks_of(card):
            compile_network(each)
    segmenter = Segmenter(card, "cpu", compiled=compiled, **kwargs)
    if compiled and segmenter.compiled is None:
        raise LightSegError(f"the compiled network did not load ({segmenter.compiled_note})", card.path)
    return segmenter


def benchmark(args: argparse.Namespace) -> None:
    """Score every model on every case, print the tables and the gate; exit 1 if --gate is given and a model fails."""
    cases = load_cases(args.cases, args.data)
    kwargs = overrides(args)
    rows: list[dict] = []
    scores: dict[str, list[np.ndarray]] = {c.name: [] for c in cases if c.labelled}
    with tempfile.TemporaryDirectory() as revisions:
        bases = [m[:-len(COMPILED)] if m.endswith(COMPILED) else m for m in args.models]
        paths = [model_at_revision(m, Path(revisions)) if ":" in m and not Path(m).exists() else m for m in bases]
        for model, path in zip(args.models, paths):
            segmenter = make_segmenter(path, model.endswith(COMPILED), kwargs)
            row: dict = {"model": model, "test_time_flips": list(segmenter.spec.flips),
                         "postprocessing": segmenter.postprocessing.to_card()}
            for case in cases:
                area, row[case.name] = score_case(segmenter, case)
                if area is not None:
                    scores[case.name].append(area)
            rows.append(row)
    add_intervals(rows, cases, scores, args)
    print_table(rows, cases, args)
    if len(rows) > 1:
        compare_with_reference(rows, cases, scores)
    if args.json:
        args.json.write_text(json.dumps({"block": args.block, "draws": args.draws, "models": rows}, indent=2) + "\n")
    if args.gate and any(row["gate_failures"] for row in rows[1:]):
        sys.exit(1)


def add_intervals(rows: list[dict], cases: list[Case], scores: dict, args: argparse.Namespace) -> None:
    """Each labelled cell's AUC interval, and each later model's AUC change interval against the first."""
    for case in cases:
        if not case.labelled:
            continue
        boot = block_bootstrap_auc(scores[case.name], case.visible, case.locations, args.block, args.draws, args.seed)
        for index, (row, column) in enumerate(zip(rows, boot.T)):
            cell = row[case.name]
            cell["auc_interval"] = [float(v) for v in np.nanpercentile(column, [2.5, 97.5])]
            if index:
                cell["auc_change"] = cell["auc"] - rows[0][case.name]["auc"]
                cell["auc_change_interval"] = [float(v) for v in np.nanpercentile(column - boot[:, 0], [2.5, 97.5])]


def print_table(rows: list[dict], cases: list[Case], args: argparse.Namespace) -> None:
    labelled = [c for c in cases if c.labelled]
    print(", ".join(f"{c.name}: {len(c.visible)} labelled slices, {int(c.visible.sum())} infected" for c in labelled)
          + f"; {args.draws} draws of {args.block}-slice blocks")
    for row in rows:
        print(f"\n{row['model']}  (flips: {','.join(row['test_time_flips']) or 'none'}; "
              f"post-processing: {json.dumps(row['postprocessing'])})")
        print(f"  {'case':<14} {'AUC':>6} {'95% interval':>14} {'sens':>6} {'spec':>6} {'slices called':>14} "
              f"{'infection mL':>13} {'>10 mm of lesions':>18} {'seconds':>8} {'trained on':>11}")
        for case in cases:
            cell = row[case.name]
            if case.labelled:
                low, high = cell["auc_interval"]
                head = f"{cell['auc']:>6.3f} {f'{low:.3f}-{high:.3f}':>14} {cell['sensitivity']:>6.3f} " \
                       f"{cell['specificity']:>6.3f} {'':>14}"
            else:
                head = f"{'':>6} {'':>14} {'':>6} {'':>6} {cell['slices_called']:>14}"
            far = f"{cell['false_positive_ml']:.1f}" if case.lesions else ""
            print(f"  {case.name:<14} {head} {cell['infection_ml']:>13.1f} {far:>18} {cell['seconds']:>8.2f} "
                  f"{'yes' if cell['trained_on'] else 'no':>11}")
        row["targets"] = target_verdicts(row)
        if row["targets"]:
            verdicts = (f"{name} {'met' if ok else 'NOT met'}" for name, ok in row["targets"].items())
            print("  targets: " + "; ".join(verdicts))


def compare_with_reference(rows: list[dict], cases: list[Case], scores: dict) -> None:
    """Print each later model's changes against the first and the release gate's verdict."""
    reference = rows[0]
    for index, row in enumerate(rows[1:], start=1):
        print(f"\n{row['model']} against {reference['model']}:")
        failures = []
        for case in cases:
            if not case.labelled:
                continue
            cell = row[case.name]
            changes = changed_calls(case.locations, case.visible, scores[case.name][0], scores[case.name][index])
            counts = call_change_counts(changes)
            cell.update(**counts, changed_calls=changes)
            low, high = cell["auc_change_interval"]
            print(f"  {case.name}: AUC {cell['auc_change']:+.3f} ({low:+.3f} to {high:+.3f}); infected slices "
                  f"+{counts['infected_slices_gained']} / -{counts['infected_slices_lost']}, clear slices "
                  f"+{counts['clear_slices_newly_called']} / -{counts['clear_slices_no_longer_called']}")
            for change in changes:
                print(f"    {change['position_mm']:>8.1f} mm {change['label']:>9}: {change['reference_mm2']:>7.1f} -> "
                      f"{change['model_mm2']:>7.1f} mm^2")
            failures += labelled_case_failures(case.name, cell)
        row["gate_failures"] = failures + volume_failures(row, reference)
        verdict = "FAIL: " + "; ".join(row["gate_failures"]) if row["gate_failures"] else "pass"
        print(f"  release gate: {verdict}")


if __name__ == "__main__":
    main()
