"""Network throughput on one device: MiniSeg at 288 x 288 by batch size, precision and execution form, and P001 end
to end, each against the reference forward measured in the same run.

    python benchmarks/bench_gpu.py                    # CUDA when torch sees it, else the CPU rows
    python benchmarks/bench_gpu.py --device cpu --batches 1,8,32 --seconds 2

Reference: the plain eager fp32 MiniSeg forward at batch 1 on 512 x 512 (as in bench_inference.py). Rows: the engine's
form (BatchNorm folded, linear steps merged, channels_last) at batch 1 to 256 in fp32, fp16 and bf16 (autocast),
eager, ``torch.compile`` and, on CUDA, CUDA graphs (compiled with mode="reduce-overhead"). On the CPU the compiled
form takes about a minute per shape to build, so it is measured at one batch size only (--compile-batch), and fp16
is left out (no fast fp16 convolutions on x86). Then the arithmetic limit: MiniSeg's floating-point operations per
slice (torch's FLOP counter) against a large fp32 matrix product's rate on the same device, the most that device
does. Last, ``lightseg segment`` on the P001 DICOM series with --device, read included (median of --repeats).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_inference import P001, reference_miniseg  # noqa: E402
from LightSegLib.models import MiniSeg  # noqa: E402
from LightSegLib.models.inference import inference_form  # noqa: E402

SIZE = 288
DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def rate(model, batch: int, device: torch.device, seconds: float, dtype: torch.dtype | None = None,
         size: int = SIZE, channels_last: bool = True) -> float:
    """Median slices per second over timed forwards after three warm-ups (compiles and graph captures happen there)."""
    x = torch.randn(batch, 3, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    times: list[float] = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        for i in range(10_000):
            synchronize(device)
            start = time.perf_counter()
            model(x)
            synchronize(device)
            if i >= 3:
                times.append(time.perf_counter() - start)
            if len(times) >= 3 and sum(times) > seconds:
                break
    return batch / statistics.median(times)


def engine_model(device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return inference_form(MiniSeg(3, 2).eval()).to(device, memory_format=torch.channels_last)


def forms(device: torch.device, batch: int, compile_batch: int) -> list[str]:
    if device.type == "cuda":
        return ["eager", "compiled", "cuda graphs"]
    return ["eager", "compiled"] if batch == compile_batch else ["eager"]


def compiled(model: torch.nn.Module, form: str) -> torch.nn.Module:
    if form == "eager":
        return model
    return torch.compile(model, mode="reduce-overhead" if form == "cuda graphs" else None)


def flops_per_slice(device: torch.device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    model = engine_model(device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, SIZE, SIZE, device=device).contiguous(memory_format=torch.channels_last))
    return float(counter.get_total_flops())


def matmul_flops_per_second(device: torch.device, seconds: float) -> float:
    """The device's attainable fp32 rate: a 2048 x 2048 matrix product, the kind of work it does best."""
    a, b = torch.randn(2048, 2048, device=device), torch.randn(2048, 2048, device=device)
    times = []
    for i in range(1000):
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        if i >= 2:
            times.append(time.perf_counter() - start)
        if len(times) >= 3 and sum(times) > seconds:
            break
    return 2 * 2048 ** 3 / statistics.median(times)


def end_to_end(device: str, repeats: int) -> list[dict]:
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            report = Path(tmp) / "report.json"
            command = [sys.executable, "-m", "LightSegLib", "segment", str(P001), "-o", f"{tmp}/labels.nrrd",
                       "--report", str(report), "--device", device, "--force"]
            start = time.perf_counter()
            result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
            if result.returncode != 0:
                sys.exit(f"segment failed: {result.stderr.strip()}")
            runs.append({"wall_s": time.perf_counter() - start, **json.loads(report.read_text())["timings_s"]})
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", default="1,2,4,8,16,32,64,128,256")
    parser.add_argument("--precisions", default=None, help="default: fp32,fp16,bf16 on CUDA, fp32,bf16 on the CPU")
    parser.add_argument("--compile-batch", type=int, default=8, help="CPU only: the one batch size compiled")
    parser.add_argument("--no-compile", action="store_true", help="eager rows only")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing budget per row")
    parser.add_argument("--repeats", type=int, default=3, help="end-to-end runs of P001")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    precisions = (args.precisions or ("fp32,fp16,bf16" if device.type == "cuda" else "fp32,bf16")).split(",")
    print(f"torch {torch.__version__} on {name}")

    reference = rate(reference_miniseg().eval().to(device), 1, device, args.seconds, size=512, channels_last=False)
    print(f"\nreference: MiniSeg eager fp32, batch 1, 512 x 512: {reference:.1f} slices/s")
    print(f"\n{'MiniSeg engine form, ' + str(SIZE) + ' x ' + str(SIZE):<40} {'slices/s':>10} {'x reference':>12}")
    best = (0.0, "")
    for batch in map(int, args.batches.split(",")):
        for precision in precisions:
            for form in forms(device, batch, args.compile_batch):
                if form != "eager" and args.no_compile:
                    continue
                label = f"batch {batch:>3}, {precision}, {form}"
                try:
                    value = rate(compiled(engine_model(device), form), batch, device, args.seconds,
                                 DTYPES[precision])
                except Exception as error:  # noqa: BLE001 - a form this device cannot run is a row, not a stop
                    print(f"{label:<40} {'failed':>10}  {type(error).__name__}: {str(error).splitlines()[0][:60]}")
                    continue
                best = max(best, (value, label))
                print(f"{label:<40} {value:10.1f} {value / reference:12.2f}")
                if device.type == "cuda":
                    torch.cuda.empty_cache()

    flops = flops_per_slice(device)
    peak = matmul_flops_per_second(device, args.seconds)
    print(f"\nMiniSeg at {SIZE} x {SIZE}: {flops / 1e9:.2f} GFLOP per slice; fp32 matrix product on this device: "
          f"{peak / 1e9:.0f} GFLOP/s")
    print(f"arithmetic limit {peak / flops:.0f} slices/s; best row ({best[1]}) {best[0]:.1f} slices/s = "
          f"{best[0] * flops / peak:.1%} of it")

    runs = end_to_end(args.device, args.repeats)
    run = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]
    reference_seconds = 148 / reference
    stages = ", ".join(f"{k} {v:.2f}" for k, v in run.items() if k not in ("wall_s", "total"))
    print(f"\nP001 end to end (lightseg segment --device {args.device}, read included): {run['wall_s']:.2f} s, "
          f"the reference forward of its 148 slices {reference_seconds:.2f} s, ratio "
          f"{run['wall_s'] / reference_seconds:.2f} (median of {len(runs)}); stages (s): {stages}")


if __name__ == "__main__":
    main()
