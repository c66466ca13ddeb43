"""``lightseg batch``: the same results as ``segment``, resumable, failed rows for broken studies, and Ray."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import DATA, P001_DICOM, REPO, SAMPLE, run_cli

CTS = DATA / "covid-ct-md"


def summary_rows(out: Path) -> dict[str, dict]:
    with open(out / "summary.csv", newline="") as f:
        return {row["id"]: row for row in csv.DictReader(f)}


def labels_of(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def write_volume(array: np.ndarray, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.5, 1.5, 4.0))
    sitk.WriteImage(image, str(path))


@pytest.fixture
def tree(tmp_path):
    """A folder tree: P001's DICOM series, and the bundled sample twice (as the same file in two places)."""
    root = tmp_path / "archive"
    shutil.copytree(P001_DICOM, root / "covid" / "P001")
    for name in ("a/s1.nrrd", "b/s2.nrrd"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLE, root / name)
    return root


def test_batch_equals_segment_skips_what_is_done_and_redoes_for_a_new_model(tree, tmp_path, untrained_card):
    out = tmp_path / "out"
    tic = time.perf_counter()
    first = run_cli("batch", tree, "-o", out, "--workers", "2")
    first_seconds = time.perf_counter() - tic
    assert first.returncode == 0, first.stderr
    rows = summary_rows(out)
    assert set(rows) == {"covid/P001", "a/s1", "b/s2"} and {r["status"] for r in rows.values()} == {"done"}

    for study, source in (("covid/P001", tree / "covid" / "P001"), ("a/s1", tree / "a" / "s1.nrrd")):
        single = tmp_path / f"single-{study.replace('/', '-')}"
        result = run_cli("segment", source, "-o", f"{single}.nrrd", "--report", f"{single}.json")
        assert result.returncode == 0, result.stderr
        assert np.array_equal(labels_of(out / f"{study}.nrrd"), labels_of(Path(f"{single}.nrrd")))
        batch_report, segment_report = json.loads((out / f"{study}.json").read_text()), \
            json.loads(Path(f"{single}.json").read_text())
        for key in ("infection_ml", "lung_volume_ml", "percent_involved", "lungs", "slices", "model", "postprocessing"):
            assert batch_report[key] == segment_report[key], key
        assert float(rows[study]["infection_ml"]) == segment_report["infection_ml"]
        assert rows[study]["model_sha256"] == segment_report["model"]["weights_sha256"]

    tic = time.perf_counter()
    again = run_cli("batch", tree, "-o", out, "--workers", "2")
    assert again.returncode == 0, again.stderr
    assert time.perf_counter() - tic < first_seconds / 5
    assert {r["status"] for r in summary_rows(out).values()} == {"skipped"}

    forced = run_cli("batch", tree, "-o", out, "--workers", "2", "--force", "--progress-json")
    assert forced.returncode == 0, forced.stderr
    assert [json.loads(line)["status"] for line in forced.stdout.splitlines()] == ["done"] * 3

    other_model = run_cli("batch", tree, "-o", out, "--workers", "2", "--model", untrained_card.path)
    assert other_model.returncode == 0, other_model.stderr
    rows = summary_rows(out)
    assert {r["status"] for r in rows.values()} == {"done"}
    assert {r["model_sha256"] for r in rows.values()} == {untrained_card.weights_sha256}


def test_broken_studies_are_failed_rows_with_segments_message_and_the_rest_finish(tmp_path):
    root = tmp_path / "archive"
    root.mkdir()
    shutil.copy(SAMPLE, root / "good.nrrd")
    (root / "unreadable.nii.gz").write_bytes(b"not an image")
    sample = labels_of(SAMPLE)
    body = np.full(sample.shape, -1000, np.int16)
    body[:, 40:150, 60:200] = 40  # a body without any air inside: no lungs
    write_volume(body, root / "no-lungs.nrrd")
    write_volume(((sample - sample.min()) // 10).astype(np.int16), root / "not-ct.nrrd")
    out = tmp_path / "out"
    result = run_cli("batch", root, "-o", out, "--workers", "2")
    assert result.returncode == 1
    rows = summary_rows(out)
    assert {k: r["status"] for k, r in rows.items()} == {"good": "done", "unreadable": "failed",
                                                          "no-lungs": "failed", "not-ct": "failed"}
    for name, suffix in (("unreadable", ".nii.gz"), ("not-ct", ".nrrd")):
        alone = run_cli("segment", root / f"{name}{suffix}", "-o", tmp_path / f"{name}-alone.nrrd")
        assert alone.returncode == 2
        assert rows[name]["error"] == alone.stderr.strip().removeprefix("lightseg: error: ")
    assert rows["no-lungs"]["error"] == f"{root / 'no-lungs.nrrd'}: no lungs found; the mask is empty"
    assert sorted(p.name for p in out.iterdir()) == ["good.json", "good.nrrd", "summary.csv"]


def test_a_killed_run_is_completed_by_the_next_with_no_half_written_output(tmp_path):
    root = tmp_path / "archive"
    root.mkdir()
    for index in range(4):
        shutil.copy(SAMPLE, root / f"s{index}.nrrd")
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "LightSegLib", "batch", str(root), "-o", str(out),
                                "--workers", "1", "--progress-json"], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        first_row = json.loads(process.stdout.readline())  # one study finished; the next is being segmented
        assert first_row["status"] == "done"
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert not (out / "summary.csv").exists()
    rerun = run_cli("batch", root, "-o", out, "--workers", "2", "--progress-json")
    assert rerun.returncode == 0, rerun.stderr
    statuses = {json.loads(line)["id"]: json.loads(line)["status"] for line in rerun.stdout.splitlines()}
    assert statuses[first_row["id"]] == "skipped"
    assert sorted(statuses.values()) == ["done", "done", "done", "skipped"]
    expected = {f"s{i}{suffix}" for i in range(4) for suffix in (".nrrd", ".json")} | {"summary.csv"}
    assert {p.name for p in out.iterdir()} == expected  # no temporary or partial file left behind


@pytest.fixture
def ray_cluster(tmp_path):
    """A local Ray cluster with 2 CPUs, started as a user would (``ray start --head``), stopped afterwards."""
    ray = Path(sys.executable).parent / "ray"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    started = subprocess.run([str(ray), "start", "--head", "--num-cpus", "2", "--include-dashboard=false",
                              "--disable-usage-stats"], capture_output=True, text=True, env=env, timeout=300)
    assert started.returncode == 0, started.stderr
    try:
        yield env
    finally:
        subprocess.run([str(ray), "stop", "--force"], capture_output=True, env=env, timeout=300)


def test_batch_on_a_local_ray_cluster_with_a_broken_study(tmp_path, ray_cluster):
    manifest = tmp_path / "manifest.csv"
    (tmp_path / "broken.nrrd").write_bytes(b"NRRD0004\nnot really\n")
    lines = ["id,path"] + [f"{case},{CTS / case}" for case in ("P001", "cap002", "normal001")] + ["broken,broken.nrrd"]
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    result = run_cli("batch", manifest, "-o", out, "--ray", "auto", "--progress-json", env=ray_cluster)
    assert result.returncode == 1, result.stderr
    rows = summary_rows(out)
    assert {k: r["status"] for k, r in rows.items()} == {"P001": "done", "cap002": "done", "normal001": "done",
                                                          "broken": "failed"}
    assert rows["broken"]["error"].startswith(f"{tmp_path / 'broken.nrrd'}: ")
    assert len(result.stdout.splitlines()) == 4  # a progress line per study, streamed from the actors
    for case in ("P001", "cap002", "normal001"):
        report = json.loads((out / f"{case}.json").read_text())
        assert report["slices"]["total"] == len(list((CTS / case).iterdir()))
        assert labels_of(out / f"{case}.nrrd").shape[0] == report["slices"]["total"]
    assert float(rows["normal001"]["infection_ml"]) < float(rows["P001"]["infection_ml"]) / 10


def test_bad_batch_input_is_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("batch", empty, "-o", tmp_path / "out")
    assert result.returncode == 2 and "no CT volumes or DICOM series found" in result.stderr
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,path\na,x.nrrd\na,y.nrrd\n")
    result = run_cli("batch", manifest, "-o", tmp_path / "out")
    assert result.returncode == 2 and "study ids must be unique" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_batch_writes_dicom_segmentations_for_dicom_studies(tmp_path):
    """--format dcm: a DICOM Segmentation per DICOM series; a volume-file study is a failed row with segment's
    one-line refusal (no source series to reference)."""
    root = tmp_path / "archive"
    shutil.copytree(P001_DICOM, root / "P001")
    shutil.copy(SAMPLE, root / "sample.nrrd")
    out = tmp_path / "out"
    result = run_cli("batch", root, "-o", out, "--workers", "2", "--format", "dcm")
    assert result.returncode == 1
    rows = summary_rows(out)
    assert rows["P001"]["status"] == "done" and rows["sample"]["status"] == "failed"
    assert "DICOM outputs need a DICOM series folder as input" in rows["sample"]["error"]
    import pydicom

    seg = pydicom.dcmread(out / "P001.dcm")
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and len(seg.SegmentSequence) == 4
    assert json.loads((out / "P001.json").read_text())["batch"]["format"] == "dcm"


def test_a_single_worker_reads_the_next_study_while_the_current_one_runs(tree, tmp_path):
    """With one worker, study B is read (and its lungs found) during study A; B's result equals ``segment``'s."""
    from LightSegLib.batch.job import PATTERN_COLUMNS, REGION_COLUMNS, BatchSettings, StudyRunner
    from LightSegLib.batch.studies import find_studies

    studies = {study.id: study for study in find_studies(tree)}
    first, second = studies["a/s1"], studies["b/s2"]
    runner = StudyRunner(BatchSettings(str(tmp_path / "out"), device="cpu"))
    row = runner.run(first, upcoming=second)
    assert row["status"] == "done"
    assert all(isinstance(row[column], float) for column in REGION_COLUMNS)  # the regional figures, per lung
    assert row["ground_glass_ml"] + row["consolidation_ml"] == pytest.approx(row["infection_ml"], abs=0.11)
    assert set(PATTERN_COLUMNS) == {"ground_glass_ml", "consolidation_ml"}
    ahead = runner._ahead
    assert ahead is not None and ahead.path == second.path
    assert runner.run(second)["status"] == "done" and runner._ahead is None
    assert runner.studies_read_ahead == 1 and ahead.scanning.result() is not None

    single = run_cli("segment", second.path, "-o", tmp_path / "single.nrrd")
    assert single.returncode == 0, single.stderr
    assert np.array_equal(labels_of(tmp_path / "out" / "b" / "s2.nrrd"), labels_of(tmp_path / "single.nrrd"))


def test_batch_writes_the_one_page_report_of_each_study(tmp_path):
    root = tmp_path / "archive"
    root.mkdir()
    shutil.copy(SAMPLE, root / "sample.nrrd")
    result = run_cli("batch", root, "-o", tmp_path / "out", "--workers", "1", "--report-pdf")
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "out" / "sample.pdf").read_bytes()
    assert page.startswith(b"%PDF") and "miniseg-covid".encode("utf-16-be") in page  # the metadata names the model
