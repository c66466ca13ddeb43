"""Slicer's core libraries (the ``slicer-core`` wheel) started the way the Slicer application starts them.

qSlicerCoreApplication creates the MRML scene and the application logic with its colour logic, and each loadable
module's logic is created, given the scene and the application logic, and registered under its module name (trame-
slicer's ``SlicerApp`` does the same). Here that sequence runs for the modules LightSeg's Logic and self-tests use:
colours, volumes, segmentations, subject hierarchy, terminologies (with Slicer's terminology files) and tables.
``slicer.mrmlScene`` and ``slicer.modules.<name>.logic()`` then return these real objects, as in the application.
Nothing of Slicer's behaviour is re-implemented.

Needs the Slicer application, so not here: Qt widgets and the parameter-node GUI binding, PyTorchUtils, the
Extensions Manager build, ``slicer.util.loadVolume``/``saveNode`` (the application's IO manager) and
``slicer.util.launchConsoleProcess``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

TERMINOLOGY_FILES = ("SegmentationCategoryTypeModifier-SlicerGeneralAnatomy.term.json",
                     "SegmentationCategoryTypeModifier-DICOM-Master.term.json",
                     "AnatomicRegionAndModifier-DICOM-Master.term.json")


def terminologies_folder() -> Path:
    """Slicer's terminology files, as packaged with trame-slicer 1.7.2 (installed by the Makefile without its
    dependencies, for these files only; the slicer-core wheel has no share folder)."""
    spec = importlib.util.find_spec("trame_slicer")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("trame-slicer's resources are missing: run `make test`, which installs them")
    folder = Path(spec.submodule_search_locations[0]) / "resources" / "terminologies"
    missing = [name for name in TERMINOLOGY_FILES if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(f"{folder}: Slicer terminology files missing: {missing}")
    return folder


def start_slicer_core() -> SimpleNamespace:
    """Create the scene and the module logics; return them, after making ``slicer`` serve them as the app does."""
    import slicer
    import slicer.util  # noqa: F401  (the application imports it at start-up)
    from vtkmodules.vtkCommonCore import vtkCollection

    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    app_logic.SetSliceLogics(vtkCollection())
    app_logic.SetViewLogics(vtkCollection())

    def module_logic(name: str, logic):
        logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(name, logic)
        return logic

    # the application logic's own colour logic, with the default colour tables (the Colors module's file-based
    # tables need the application's home directory)
    colors = app_logic.GetColorLogic()
    colors.SetMRMLScene(scene)
    colors.AddDefaultColorNodes()
    app_logic.SetModuleLogic("Colors", colors)
    terminologies = slicer.vtkSlicerTerminologiesModuleLogic()
    terminologies.SetModuleShareDirectory(str(terminologies_folder()))
    logics = {
        "colors": colors,
        "volumes": module_logic("Volumes", slicer.vtkSlicerVolumesLogic()),
        "terminologies": module_logic("Terminologies", terminologies),
        "segmentations": module_logic("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic()),
        "subjecthierarchy": module_logic("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic()),
        "tables": module_logic("Tables", slicer.vtkSlicerTablesLogic()),
    }
    slicer.mrmlScene = scene
    slicer.modules = SimpleNamespace(**{name: SimpleNamespace(logic=lambda logic=logic: logic)
                                        for name, logic in logics.items()})
    return SimpleNamespace(scene=scene, app_logic=app_logic, **logics)
