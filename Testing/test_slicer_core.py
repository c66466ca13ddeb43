"""The module's Logic and self-tests on Slicer's own core libraries (slicer-core), started as Slicer starts them."""

import sys

import pytest

from conftest import REPO
from slicer_core_app import start_slicer_core

sys.path.insert(0, str(REPO / "LightSeg"))


@pytest.fixture(scope="module")
def slicer_core():
    return start_slicer_core()


@pytest.fixture(scope="module")
def self_tests(slicer_core):
    import LightSegSelfTests

    return LightSegSelfTests


def test_the_core_serves_the_real_logics(slicer_core):
    import slicer

    assert slicer.mrmlScene is slicer_core.scene
    assert slicer.modules.volumes.logic() is slicer_core.volumes
    assert slicer.modules.volumes.logic().GetClassName() == "vtkSlicerVolumesLogic"
    assert slicer.modules.segmentations.logic().GetClassName() == "vtkSlicerSegmentationsModuleLogic"
    assert slicer_core.scene.GetFirstNodeByClass("vtkMRMLColorTableNode") is not None  # default colour tables
    contexts = __import__("vtk").vtkStringArray()
    slicer_core.terminologies.GetLoadedTerminologyNames(contexts)
    assert "Segmentation category and type - DICOM master list" in \
        [contexts.GetValue(i) for i in range(contexts.GetNumberOfValues())]


def test_segment_the_sample(self_tests):
    report = self_tests.test_SegmentSample()
    assert report["model"]["id"] == "miniseg-covid" and report["infection_ml"] > 0


def test_segment_twice_and_cancel(self_tests):
    self_tests.test_SegmentTwiceKeepsOtherSegmentsAndCancelChangesNothing()


def test_permuted_and_flipped_volume_node(self_tests):
    self_tests.test_FlippedVolumeAgrees()


def test_bad_volume_nodes(self_tests):
    self_tests.test_BadVolumesAreRefusedWithNothingWritten()


def test_retrain_from_scene_pairs(self_tests):
    self_tests.test_FinetuneFromScene()


def test_retrain_from_a_ct_without_infection(self_tests):
    self_tests.test_FinetuneWithCTsWithoutInfection()


def test_the_self_test_list_is_what_slicer_runs(self_tests):
    """LightSegTest (LightSeg.py) runs SELF_TESTS; every self-test function is in it, and each is run above."""
    functions = {name for name in dir(self_tests) if name.startswith("test_")}
    assert {f.__name__ for f in self_tests.SELF_TESTS} == functions
    assert "SELF_TESTS" in (REPO / "LightSeg" / "LightSeg.py").read_text()
