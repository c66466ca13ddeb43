"""``lightseg segment`` imports only what it uses: no DICOM writers, Ray, training, plotting or torch's compiler."""

import json
import subprocess
import sys

from conftest import REPO, SAMPLE

UNUSED_BY_SEGMENT = ("highdicom", "ray", "matplotlib", "pynetdicom", "LightSegLib.training", "LightSegLib.batch.job",
                     "LightSegLib.dicom_out", "LightSegLib.montage", "torch._inductor")


def test_segment_imports_nothing_it_does_not_use(tmp_path):
    script = ("import json, sys; from LightSegLib.cli import main; "
              f"code = main(['segment', {str(SAMPLE)!r}, '-o', {str(tmp_path / 'out.nrrd')!r}, '--device', 'cpu']); "
              "print(json.dumps([code, sorted(sys.modules)]))")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    code, modules = json.loads(result.stdout.strip().splitlines()[-1])
    assert code == 0 and "torch" in modules and "LightSegLib.read_ahead" in modules
    loaded = [name for name in UNUSED_BY_SEGMENT if name in modules]
    assert loaded == [], f"lightseg segment imported {loaded}"
