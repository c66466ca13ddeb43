"""Inference speed and memory: network throughput against a reference measured in the same run, and whole volumes.

    python benchmarks/bench_inference.py [--seconds 8] [--skip-600] [--repeats 3]

Reference: the plain eager fp32 forward at batch 1 on 512 x 512 input (the official MiniSeg protocol, 3 channels),
with the AHSP blocks computed in the paper's order as the official code does (``PaperOrderAHSP``).
Engine: what LightSeg runs (BatchNorm folded, MiniSeg's linear steps merged, channels_last, batched; fp16 autocast on CUDA).
End to end: `lightseg segment` in a subprocess (read, lung mask, inference, write) on the full-resolution P001 DICOM
series (the default model as its card runs it, with the test-time flips that 1.6.0 ran, and
``miniseg-covid-confirmed``, whose second network confirms each infection component) and on a
512 x 512 x 600 volume made from it; wall time and peak RSS of that process. Each run alternates with a measurement of
the reference forward, and the ratio is the median of the per-pair ratios (the machine's speed drifts by half within
minutes); the rows take turns, so each repeat of every row falls in the same stretch of time. Warm process: the
second of two segmentations of P001 in this process (a Slicer session or a batch worker), read and write included.
Lung mask: P001's lung mask and crop boxes in this process, five times, each followed by the network's forward for
its slices; the median of the five ratios. Floor: a fresh interpreter's ``import torch`` plus the network's forward
on P001's lung slices, the least any fresh process with torch can take. Compiled: the P001 rows and the network row
are measured again with the networks that ``lightseg compile`` builds for this CPU (bfloat16 where it has the
instructions, else ONNX Runtime; run first, in a temporary LightSeg home; the eager rows run with an empty one).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from LightSegLib import registry  # noqa: E402
from LightSegLib.cards import load_network  # noqa: E402
from LightSegLib.compiled import load_compiled  # noqa: E402
from LightSegLib.io import read_image  # noqa: E402
from LightSegLib.lung_crops import lung_crops  # noqa: E402
from LightSegLib.pipeline import SegmentRequest, make_segmenter, segment_file  # noqa: E402
from LightSegLib.read_ahead import start_reading  # noqa: E402
from LightSegLib.models import MiniSeg, ULite  # noqa: E402
from LightSegLib.models.miniseg import AHSP  # noqa: E402
from LightSegLib.models.inference import inference_form  # noqa: E402

P001 = REPO.parent / "shared" / "data" / "covid-ct-md" / "P001"


def slices_per_second(model: torch.nn.Module, batch: int, channels: int, size: int, device: torch.device,
                      seconds: float, channels_last: bool = False, half: bool = False) -> float:
    """Median throughput over repeated timed forwards (after two warm-ups)."""
    x = torch.randn(batch, channels, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode(), torch.autocast(device.type, enabled=half):
        for i in range(1000):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 2:
                times.append(time.perf_counter() - start)
            if sum(times) > seconds and len(times) >= 3:
                break
    return batch / statistics.median(times)


class PaperOrderAHSP(AHSP):
    """AHSP computed step by step as architectures.md (and the official code) writes it: each level gated on its
    own, h_j + h_j * a_j, then concatenated again. The reference keeps this cost, so that making LightSeg's AHSP
    cheaper (one broadcast gate) shows up as engine speed, not as a faster reference."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pyramid = self.pyramid(x)
        attention = torch.sigmoid(self.gate(torch.cat(pyramid, 1)))
        gated = [h + h * attention[:, j:j + 1] for j, h in enumerate(pyramid)]
        return self.act(self.norm(self.fuse(torch.cat(gated, 1))))


def reference_miniseg() -> MiniSeg:
    """MiniSeg with paper-order AHSP blocks (same weights, same function, the official cost)."""
    model = MiniSeg(3, 2)
    for module in model.modules():
        if type(module) is AHSP:
            module.__class__ = PaperOrderAHSP
    return model


def network_rows(device: torch.device, seconds: float) -> list[tuple[str, float]]:
    torch.manual_seed(0)
    half = device.type == "cuda"
    miniseg, ulite = reference_miniseg().eval().to(device), ULite(1, 1).eval().to(device)
    fast_miniseg = inference_form(MiniSeg(3, 2).eval()).to(device, memory_format=torch.channels_last)
    fast_ulite = inference_form(ulite).to(device, memory_format=torch.channels_last)
    batch = 32 if device.type == "cuda" else 8
    return [
        ("MiniSeg reference: eager fp32, batch 1, 512", slices_per_second(miniseg, 1, 3, 512, device, seconds)),
        (f"MiniSeg engine: folded+merged, channels_last, batch {batch}, 512",
         slices_per_second(fast_miniseg, batch, 3, 512, device, seconds, True, half)),
        (f"MiniSeg engine: folded+merged, channels_last, batch {batch}, 288 (lung crop)",
         slices_per_second(fast_miniseg, batch, 3, 288, device, seconds, True, half)),
        ("U-Lite reference: eager fp32, batch 1, 512", slices_per_second(ulite, 1, 1, 512, device, seconds)),
        (f"U-Lite engine: folded, channels_last, batch {batch}, 256 (lung crop)",
         slices_per_second(fast_ulite, batch, 1, 256, device, seconds, True, half)),
    ]


def run_segment(input_path: Path, out_dir: Path, home: Path, model: str = "miniseg-covid",
                extra: tuple[str, ...] = ()) -> dict:
    """`lightseg segment` in a subprocess with LightSeg's home ``home`` (where compiled networks live): wall time,
    peak RSS (MB) and the report's stage timings."""
    report = out_dir / f"{input_path.name}.json"
    command = [sys.executable, "-m", "LightSegLib", "segment", str(input_path), "-o",
               str(out_dir / f"{input_path.name}-labels.nrrd"), "--report", str(report), "--model", model,
               "--device", "cpu", "--force", *extra]
    start = time.perf_counter()
    # a fresh process per run, so RUSAGE_CHILDREN's peak is this run's (wrapped in a shell that reports it)
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")
    result = subprocess.run([sys.executable, "-c", probe, *command], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "LIGHTSEG_HOME": str(home)})
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"segment failed: {result.stderr.strip()}")
    peak_mb = int(result.stdout.strip().splitlines()[-1]) / 1024
    report = json.loads(report.read_text())
    if report["model"]["network_form"].startswith("compiled") != (home / "compiled").is_dir():
        sys.exit(f"segment ran the {report['model']['network_form']} network with LightSeg home {home}")
    return {"wall_s": wall, "peak_rss_mb": peak_mb, "timings": report["timings_s"]}


def compiled_rows(home: Path, seconds: float) -> None:
    """The default model's compiled network against its eager engine form at 288 x 288, batch 8, alternating (5
    pairs; the ratio is the median of the per-pair ratios)."""
    card = registry.resolve("miniseg-covid")
    eager = inference_form(load_network(card)).to(memory_format=torch.channels_last)
    before = os.environ.get("LIGHTSEG_HOME")
    os.environ["LIGHTSEG_HOME"] = str(home)  # where load_compiled looks
    compiled, _ = load_compiled(card, card.input_spec(), torch.device("cpu"))
    if before is None:
        del os.environ["LIGHTSEG_HOME"]
    else:
        os.environ["LIGHTSEG_HOME"] = before
    pairs = [(slices_per_second(eager, 8, 3, 288, torch.device("cpu"), seconds / 2, True),
              slices_per_second(compiled, 8, 3, 288, torch.device("cpu"), seconds / 2, True)) for _ in range(5)]
    eager_rate, compiled_rate = (statistics.median(rates) for rates in zip(*pairs))
    ratio = statistics.median(c / e for e, c in pairs)
    print(f"MiniSeg at 288, batch 8, alternating (median of 5): eager fp32 {eager_rate:.1f} slices/s, {compiled.form} "
          f"{compiled_rate:.1f} slices/s: x{ratio:.2f}")


def build_compiled(home: Path, models: tuple[str, ...]) -> None:
    """``lightseg compile`` of ``models`` into the LightSeg home ``home``, timed (in a subprocess, as a user runs it:
    torch's compiler stays out of this process)."""
    for model in models:
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "LightSegLib", "compile", "--model", model], cwd=REPO,
                                capture_output=True, text=True, env={**os.environ, "LIGHTSEG_HOME": str(home)})
        if result.returncode != 0:
            sys.exit(f"compile failed: {result.stderr.strip()}")
        print(f"lightseg compile --model {model}: {time.perf_counter() - start:.0f} s")


def make_600(directory: Path) -> Path:
    """512 x 512 x 600 from the P001 series: its 148 slices, alternately reversed, repeated (uncompressed NRRD)."""
    image = read_image(P001).image
    hu = sitk.GetArrayFromImage(image)
    stack = np.concatenate([hu if i % 2 == 0 else hu[::-1] for i in range(5)])[:600]
    volume = sitk.GetImageFromArray(stack)
    volume.SetSpacing(image.GetSpacing())
    volume.SetOrigin(image.GetOrigin())
    path = directory / "P001x600.nrrd"
    sitk.WriteImage(volume, str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="timing budget per network row")
    parser.add_argument("--skip-600", action="store_true", help="skip the 512 x 512 x 600 volume")
    parser.add_argument("--repeats", type=int, default=3, help="end-to-end runs per volume (the median is shown)")
    args = parser.parse_args()

    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"CUDA: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
    reference = {}
    for device in devices:
        rows = network_rows(device, args.seconds)
        reference[device.type] = rows[0][1]
        print(f"\n{'network on ' + device.type:<62} {'slices/s':>9} {'x reference':>12}")
        for name, rate in rows:
            base = rows[0][1] if name.startswith("MiniSeg") else rows[3][1]
            print(f"{name:<62} {rate:9.1f} {rate / base:12.2f}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        eager_home, compiled_home = tmp / "home-eager", tmp / "home-compiled"
        eager_home.mkdir()
        build_compiled(compiled_home, ("miniseg-covid", "miniseg-confirm"))
        compiled_rows(compiled_home, args.seconds)
        # the card's settings, with test-time flips (one more network pass each, besides the plain one), and the
        # model whose components a second network confirms (two networks a slice)
        default = "miniseg-covid"
        volumes = [("P001 DICOM, 512x512x148", P001, 148, default, (), eager_home),
                   ("P001 DICOM, flips horizontal,vertical", P001, 148, default,
                    ("--test-time-flips", "horizontal,vertical"), eager_home),
                   ("P001 DICOM, miniseg-covid-confirmed", P001, 148, "miniseg-covid-confirmed", (), eager_home)]
        volumes += [("P001 DICOM, compiled", P001, 148, default, (), compiled_home),
                    ("P001 DICOM, confirmed, compiled", P001, 148, "miniseg-covid-confirmed", (), compiled_home)]
        if not args.skip_600:
            volumes.append(("P001 x4, 512x512x600 (NRRD)", make_600(tmp), 600, default, (), eager_home))
        print(f"\n{'end to end on the CPU (lightseg segment)':<36} {'wall s':>7} {'ref s':>7} {'ratio':>6} "
              f"{'peak RSS MB':>12}  stages (s)")
        reference_model = reference_miniseg().eval()
        runs: dict[str, list[dict]] = {name: [] for name, *_ in volumes}
        for _ in range(args.repeats):  # the rows take turns, each run beside its own reference: the machine drifts
            for name, path, n_slices, model, extra, home in volumes:
                ref_seconds = n_slices / slices_per_second(reference_model, 1, 3, 512, torch.device("cpu"),
                                                           args.seconds)
                run = run_segment(path, tmp, home, model, extra)
                runs[name].append({**run, "ref_s": ref_seconds, "ratio": run["wall_s"] / ref_seconds})
        for name, row_runs in runs.items():
            run = {**sorted(row_runs, key=lambda r: r["ratio"])[len(row_runs) // 2],
                   "peak_rss_mb": max(r["peak_rss_mb"] for r in row_runs)}
            stages = ", ".join(f"{k} {v:.2f}" for k, v in run["timings"].items() if k != "total")
            print(f"{name:<36} {run['wall_s']:7.2f} {run['ref_s']:7.2f} {run['ratio']:6.2f} "
                  f"{run['peak_rss_mb']:12.0f}  {stages}")
        print(f"\nwall s, ref s: the run with the median ratio of {args.repeats} (peak RSS: the largest); ref s: the "
              "reference forward alone for the same number of slices at 512 x 512 (no IO, no lung mask), measured "
              "right before that run.")
        warm_process_rows(tmp, args.seconds, [eager_home, compiled_home])


def warm_process_rows(tmp: Path, seconds: float, homes: list[Path]) -> None:
    """The second of two P001 segmentations in one process (read in line, as Slicer's "Load data" then "Segment"
    does, and read ahead during the first, as a one-worker batch does), with each LightSeg home's network (eager or
    compiled), and P001's lung mask against the eager network."""
    print(f"\n{'warm process (the 2nd segmentation)':<50} {'wall s':>7} {'ref s':>7} {'ratio':>6}  stages (s)")
    forms = []
    for home in homes:
        os.environ["LIGHTSEG_HOME"] = str(home)
        segmenter = make_segmenter(None, "cpu")  # as Slicer and batch workers run it: with the pattern network
        forms.append((segmenter.network_form, segmenter))
    request = SegmentRequest(P001, tmp / "warm.nrrd", force=True)
    rows = [(f"P001 DICOM, {where}, {form}", read_ahead, segmenter) for form, segmenter in forms
            for where, read_ahead in (("read in line", False), ("read during the 1st", True))]
    segmenter = forms[0][1]
    with ThreadPoolExecutor(max_workers=1) as pool:
        for name, read_ahead, each in rows:
            reference = 148 / slices_per_second(reference_miniseg().eval(), 1, 3, 512, torch.device("cpu"), seconds)
            ahead = start_reading(pool, P001) if read_ahead else None
            segment_file(request, segmenter=each)
            start = time.perf_counter()
            outcome = segment_file(request, segmenter=each, read_ahead=ahead)
            wall = time.perf_counter() - start
            stages = ", ".join(f"{k} {v:.2f}" for k, v in outcome.report["timings_s"].items() if k != "total")
            print(f"{name:<50} {wall:7.2f} {reference:7.2f} {wall / reference:6.2f}  {stages}")

    image = read_image(P001).image
    masks, networks = [], []
    for _ in range(5):  # taking turns with the network, so that the ratio sees the same machine
        scan = lung_crops(image)
        masks.append(scan.seconds)
        networks.append(len(scan.crops.slices) / slices_per_second(
            segmenter.model, segmenter.batch_size, 3, 288, torch.device("cpu"), seconds / 4, True))
    ratio = statistics.median(m / n for m, n in zip(masks, networks))
    print(f"\nP001 lung mask and crop boxes (median of 5): {statistics.median(masks):.2f} s (min {min(masks):.2f}); "
          f"the network's forward on its {len(scan.crops.slices)} lung slices {statistics.median(networks):.2f} s, "
          f"taking turns; ratio {ratio:.2f} (median of the 5 pairs)")
    floor_rows(forms, len(scan.crops.slices), seconds)


def torch_import_seconds() -> float:
    """Wall time of a fresh interpreter that only imports torch: what every `lightseg segment` pays first."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.perf_counter() - start


def floor_rows(forms: list, lung_slices: int, seconds: float) -> None:
    """The least a fresh `lightseg segment` of P001 can take with torch: a fresh ``import torch`` plus the network's
    forward on P001's lung slices and nothing else (no reading, lung mask, mapping back or writing), against the
    reference forward measured right before (median of 3 turns)."""
    print(f"\n{'floor of P001 end to end with torch':<50} {'import':>7} {'network':>8} {'sum':>6} {'ref s':>7} "
          f"{'ratio':>6}")
    for form, segmenter in forms:
        network = segmenter.model if segmenter.compiled is None else segmenter.compiled
        turns = []
        for _ in range(3):
            reference = 148 / slices_per_second(reference_miniseg().eval(), 1, 3, 512, torch.device("cpu"), seconds)
            start_up = torch_import_seconds()
            forward = lung_slices / slices_per_second(network, segmenter.batch_size, 3, 288, torch.device("cpu"),
                                                      seconds / 4, True)
            turns.append((start_up, forward, reference))
        start_up, forward, reference = sorted(turns, key=lambda t: (t[0] + t[1]) / t[2])[1]
        print(f"{'import torch + network forward, ' + form:<50} {start_up:7.2f} {forward:8.2f} "
              f"{start_up + forward:6.2f} {reference:7.2f} {(start_up + forward) / reference:6.2f}")


if __name__ == "__main__":
    main()
