"""Studies per minute: a shell-style loop of `lightseg segment`, `lightseg batch --workers N`, and `batch --ray` on a
local Ray cluster, over the same studies in the same run; peak memory per worker.

    python benchmarks/bench_batch.py [--copies 2] [--workers 2] [--skip-ray]

The studies are the real HU CTs of ../shared/data/covid-ct-md (DICOM series), each listed --copies times in a
manifest (distinct ids, so each copy is segmented). The loop starts one `lightseg segment` process per study, as a
shell loop would; its memory column is the largest of those processes. The batch rows take each worker's peak from
the summary's worker_peak_rss_mb column.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CTS = REPO.parent / "shared" / "data" / "covid-ct-md"
CASES = ("P001", "cap002", "normal001")


def lightseg(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "LightSegLib", *args], cwd=REPO, capture_output=True, text=True,
                          env=env)


def loop(studies: list[tuple[str, Path]], out: Path) -> tuple[float, float]:
    """One `lightseg segment` per study; (seconds, largest peak RSS in MB)."""
    out.mkdir()
    tic = time.perf_counter()
    for study_id, path in studies:
        result = lightseg("segment", str(path), "-o", str(out / f"{study_id}.nrrd"), "--report",
                          str(out / f"{study_id}.json"))
        if result.returncode != 0:
            sys.exit(f"segment failed: {result.stderr.strip()}")
    return time.perf_counter() - tic, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def batch(manifest: Path, out: Path, *options: str, env: dict | None = None) -> tuple[float, float]:
    """`lightseg batch` over the manifest; (seconds, largest worker peak RSS in MB from the summary)."""
    tic = time.perf_counter()
    result = lightseg("batch", str(manifest), "-o", str(out), *options, env=env)
    seconds = time.perf_counter() - tic
    if result.returncode != 0:
        sys.exit(f"batch failed: {result.stderr.strip()}")
    with open(out / "summary.csv", newline="") as f:
        peaks = [float(row["worker_peak_rss_mb"]) for row in csv.DictReader(f)]
    return seconds, max(peaks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=2, help="times each CT is listed")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()
    studies = [(f"{case}-{copy}", CTS / case) for copy in range(args.copies) for case in CASES]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = tmp / "manifest.csv"
        manifest.write_text("id,path\n" + "".join(f"{i},{p}\n" for i, p in studies))
        rows = [("loop of lightseg segment", *loop(studies, tmp / "loop")),
                (f"batch --workers {args.workers}", *batch(manifest, tmp / "local", "--workers", str(args.workers)))]
        if not args.skip_ray:
            ray = str(Path(sys.executable).parent / "ray")
            env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
            subprocess.run([ray, "start", "--head", f"--num-cpus={args.workers}", "--include-dashboard=false",
                            "--disable-usage-stats"], check=True, capture_output=True, env=env)
            try:
                rows.append(("batch --ray auto (local cluster)", *batch(manifest, tmp / "ray", "--ray", "auto",
                                                                        env=env)))
            finally:
                subprocess.run([ray, "stop", "--force"], capture_output=True, env=env)
    print(f"{len(studies)} studies ({', '.join(CASES)} x {args.copies}), {os.cpu_count()} cores")
    print(f"{'':<36} {'seconds':>8} {'studies/min':>12} {'x loop':>7} {'peak RSS MB':>12}")
    for name, seconds, peak in rows:
        print(f"{name:<36} {seconds:8.1f} {60 * len(studies) / seconds:12.2f} {rows[0][1] / seconds:7.2f} "
              f"{peak:12.0f}")


if __name__ == "__main__":
    main()
