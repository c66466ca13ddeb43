"""The release gate a new default model must pass on P001 (`benchmarks/compare_p001.py --gate`)."""

import json
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from compare_p001 import gate_failures  # noqa: E402

REFERENCE = {"infection_ml": 100.0}
AT_THE_LIMITS = {"auc_change_interval": [-0.2, 0.0], "infection_ml": 125.0, "infected_slices_gained": 1,
                 "infected_slices_lost": 4, "clear_slices_newly_called": 5, "clear_slices_no_longer_called": 2}


def compare_p001(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, REPO / "benchmarks" / "compare_p001.py", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, timeout=900)


def test_a_candidate_at_every_limit_passes():
    assert gate_failures(AT_THE_LIMITS, REFERENCE) == []


@pytest.mark.parametrize("change, reason", [
    ({"auc_change_interval": [-0.2, -0.001]}, "wholly below 0"),
    ({"infected_slices_lost": 5}, "net 4 infected slices lose their call"),
    ({"clear_slices_no_longer_called": 1}, "net 4 clear slices gain a call"),
    ({"infection_ml": 125.5}, "infection volume changes by +25.5%"),
    ({"infection_ml": 74.0}, "infection volume changes by -26.0%"),
])
def test_each_criterion_fails_a_candidate_past_its_limit(change, reason):
    failures = gate_failures({**AT_THE_LIMITS, **change}, REFERENCE)
    assert len(failures) == 1 and reason in failures[0]


def test_gate_on_p001_passes_the_committed_default_and_fails_a_miscalibrated_copy(tmp_path):
    """The default against itself as committed at HEAD (read from git) passes with no change at all; the same weights
    behind a window 200 HU too low call many clear slices infected and fail, so the exit status is 1."""
    card = json.loads((REPO / "Resources" / "Models" / "miniseg-covid.json").read_text())
    card["hu_window"]["level"] -= 200
    (tmp_path / "miniseg-covid.json").write_text(json.dumps(card))
    shutil.copy(REPO / "Resources" / "Models" / card["weights_file"], tmp_path)

    result = compare_p001("--models", "miniseg-covid", "HEAD:miniseg-covid", tmp_path / "miniseg-covid.json",
                          "--gate", "--draws", 200, "--json", tmp_path / "gate.json")
    assert result.returncode == 1, result.stderr
    same, miscalibrated = json.loads((tmp_path / "gate.json").read_text())["models"][1:]
    assert same["model"] == "HEAD:miniseg-covid"
    assert same["auc_change"] == 0 and same["auc_change_interval"] == [0, 0] and same["changed_calls"] == []
    assert same["gate_failures"] == []
    assert any("clear slices gain a call" in f for f in miscalibrated["gate_failures"])
    assert "FAIL: " in result.stdout


@pytest.mark.parametrize("model, message", [
    ("no-such-revision:miniseg-covid", "error: no-such-revision:Resources/Models/miniseg-covid.json: "),
    ("HEAD:no-such-model", "error: HEAD:Resources/Models/no-such-model.json: "),
    ("no-such-model", "error: no-such-model: unknown model"),
])
def test_an_unknown_model_or_revision_is_a_one_line_error_not_a_gate_failure(model, message):
    result = compare_p001("--models", "miniseg-covid", model, "--gate")
    assert result.returncode == 2
    assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1
