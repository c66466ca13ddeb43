"""The compiled network (``lightseg compile``, ``compiled.py``): built once through the CLI, run by the engine for CT
volumes on the CPU, and never a stale or damaged one. Both forms (bfloat16 AOTInductor, ONNX Runtime) are checked
on every CPU: the command builds this CPU's form, the library builds the other one when asked."""

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli
from LightSegLib.cards import ModelCard, load_network, save_model
from LightSegLib.compiled import (BF16, FORM_NAMES, ONNX, CompiledNetwork, OnnxNetwork, artefact_path, compile_network,
                                  compiled_dir, form_for_this_cpu, form_of)
from LightSegLib.engine import Segmenter
from LightSegLib.models.inference import inference_form


@pytest.fixture(scope="module")
def cli_built(untrained_card: ModelCard, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The untrained test model compiled by ``lightseg compile`` into a LightSeg home of its own: this CPU's form."""
    home = tmp_path_factory.mktemp("compile-home")
    result = run_cli("compile", "--model", untrained_card.path, env={"LIGHTSEG_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    artefacts = list((home / "compiled").iterdir())
    assert len(artefacts) == 1 and str(artefacts[0]) in result.stdout
    assert form_of(artefacts[0]) == form_for_this_cpu()
    assert artefacts[0].stat().st_mode & 0o777 == 0o644  # readable by the other accounts of a shared home
    return artefacts[0]


@pytest.fixture(scope="module", params=[BF16, ONNX])
def built(request: pytest.FixtureRequest, cli_built: Path, untrained_card: ModelCard,
          tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Each form of the test model: the command's where it is this CPU's, else built by ``compile_network`` (bfloat16
    emulated on a CPU without the instructions: slower, the same artefact)."""
    if request.param == form_for_this_cpu():
        return cli_built
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LIGHTSEG_HOME", str(tmp_path_factory.mktemp(f"compile-{request.param}")))
        return compile_network(untrained_card, form=request.param)


def install(artefact: Path) -> Path:
    """Copy a built artefact into this test's LightSeg home, where the engine looks."""
    compiled_dir().mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(artefact, compiled_dir() / artefact.name))


def test_the_compiled_network_computes_the_eager_one_for_any_batch_size(built, untrained_card):
    """11 slices: a full batch of 8 and a padded one of 3; bfloat16 moves probabilities by a little only, fp32 in
    ONNX Runtime by rounding."""
    torch.manual_seed(1)
    x = torch.randn(11, 3, 96, 96).contiguous(memory_format=torch.channels_last)
    eager = inference_form(load_network(untrained_card)).to(memory_format=torch.channels_last)
    network = CompiledNetwork(built) if form_of(built) == BF16 else OnnxNetwork(built)
    with torch.inference_mode():
        expected = torch.softmax(eager(x)[0], 1)
        got = torch.softmax(network(x)[0], 1)
    assert got.shape == expected.shape == (11, 2, 96, 96)
    assert float((got - expected).abs().max()) < (0.05 if form_of(built) == BF16 else 1e-4)


def test_the_engine_runs_the_compiled_form_once_built(built, untrained_card, sample, tmp_path):
    assert Segmenter(untrained_card, "cpu").network_form == "eager fp32"  # nothing built in this home yet
    install(built)
    probabilities = {}
    for compiled in (True, False):
        segmenter = Segmenter(untrained_card, "cpu", compiled=compiled)
        probabilities[compiled] = np.zeros(sample.GetSize()[::-1], np.float32)
        result = segmenter.segment_volume(sample, probabilities=probabilities[compiled])
        assert result.network_form == (FORM_NAMES[form_of(built)] if compiled else "eager fp32") and not result.notes
    assert probabilities[True].max() > 0
    assert np.abs(probabilities[True] - probabilities[False]).max() < 0.05

    import json

    from conftest import SAMPLE

    report = tmp_path / "report.json"
    run = run_cli("segment", SAMPLE, "-o", tmp_path / "labels.nrrd", "--model", untrained_card.path, "--device",
                  "cpu", "--report", report)
    assert run.returncode == 0, run.stderr
    assert json.loads(report.read_text())["model"]["network_form"] == FORM_NAMES[form_of(built)]


def test_a_damaged_artefact_is_reported_and_the_eager_network_runs(built, untrained_card, sample):
    install(built).write_bytes(b"not a compiled network")
    segmenter = Segmenter(untrained_card, "cpu")
    assert segmenter.network_form == "eager fp32"
    notes = segmenter.segment_volume(sample).notes
    assert any("could not be loaded" in note and "lightseg compile --force" in note for note in notes)


def test_other_weights_under_the_same_id_do_not_run_anothers_compiled_form(built, untrained_card, tmp_path):
    install(built)
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in load_network(untrained_card).state_dict().items()}
    retrained = ModelCard.load(save_model(replace(untrained_card), state, tmp_path))  # a copy: save_model sets it
    assert retrained.id == untrained_card.id and retrained.weights_sha256 != untrained_card.weights_sha256
    assert retrained.architecture == untrained_card.architecture
    spec = untrained_card.input_spec()
    assert artefact_path(retrained, spec) != artefact_path(untrained_card, spec)
    assert Segmenter(retrained, "cpu").network_form == "eager fp32"


def test_an_existing_artefact_is_kept_unless_forced(built, untrained_card):
    installed = install(built)
    before = installed.stat().st_mtime_ns
    assert compile_network(untrained_card, form=form_of(built)) == installed
    assert installed.stat().st_mtime_ns == before


def test_compiling_an_unknown_model_is_one_line_and_exit_2():
    result = run_cli("compile", "--model", "no-such-model")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "no-such-model" in result.stderr


def test_the_model_list_and_the_slicer_tooltip_say_whether_a_model_is_compiled(built, untrained_card, user_store):
    import json
    import sys

    from conftest import REPO

    sys.path.insert(0, str(REPO / "LightSeg"))
    from LightSegLogic import LightSegCoreLogic

    user_store.mkdir(parents=True, exist_ok=True)
    for path in (untrained_card.path, untrained_card.weights_path):
        shutil.copy(path, user_store)

    def listed() -> bool:
        rows = json.loads(run_cli("models", "--json").stdout)
        return next(row for row in rows if row["id"] == untrained_card.id)["compiled_for_this_cpu"]

    assert not listed() and "network: eager" in LightSegCoreLogic.cardTooltip(untrained_card, False)
    install(built)
    tooltip = LightSegCoreLogic.cardTooltip(untrained_card, False)
    assert listed() and f"network: {FORM_NAMES[form_of(built)]}, for this computer's CPU" in tooltip


def test_the_slicer_logic_compiles_a_model_and_its_confirming_network(cli_built, untrained_card):
    import sys

    from conftest import REPO
    from LightSegLib import registry
    from LightSegLib.compiled import networks_of

    sys.path.insert(0, str(REPO / "LightSeg"))
    from LightSegLogic import LightSegCoreLogic

    assert [c.id for c in networks_of(registry.resolve("miniseg-covid-confirmed"))] == ["miniseg-covid-confirmed",
                                                                                        "miniseg-confirm"]
    installed = install(cli_built)  # already built: the Logic's call finds it and builds nothing
    logic = LightSegCoreLogic()
    logic._segmenters[("stale", "cpu")] = object()
    assert logic.compileModel(str(untrained_card.path)) == [installed]
    assert logic._segmenters == {}  # segmenters loaded before hold the eager network: they are dropped
