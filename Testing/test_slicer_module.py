"""The Slicer module's application side, checked without the application: its .ui in real Qt, its Slicer API use,
its packaging, its pure logic. The Qt-free Logic and the self-tests run on Slicer's core in test_slicer_core.py."""

import ast
import json
import py_compile
import re
import sys
import xml.etree.ElementTree as ET

import jsonschema
import numpy as np
import pytest
import SimpleITK as sitk
from slicerio.segmentation import terminology_entry_from_string

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
from render_panel import plain_qt_ui, render  # noqa: E402

MODULE = REPO / "LightSeg" / "LightSeg.py"
# the files that need the Slicer application (LightSegLogic.py and LightSegSelfTests.py run on slicer-core instead)
APPLICATION_FILES = (MODULE, REPO / "LightSeg" / "LightSegAppTools.py")
UI = REPO / "LightSeg" / "Resources" / "UI" / "LightSeg.ui"
MODULE_CMAKE = REPO / "LightSeg" / "CMakeLists.txt"

# Every slicer.util function the application-side files call, checked in Slicer's source (Slicer/Slicer
# Base/Python/slicer/util.py, commit c0444d8, unless noted): name -> where it was seen.
CHECKED_SLICER_UTIL = {
    "loadUI": "util.py: def loadUI(path)",
    "childWidgetVariables": "util.py: def childWidgetVariables(widget)",
    "confirmOkCancelDisplay": "util.py: def confirmOkCancelDisplay(text, windowTitle=None, parent=None, **kwargs)",
    "errorDisplay": "util.py: def errorDisplay(text, windowTitle=None, parent=None, standardButtons=None, **kwargs)",
    "tryWithErrorDisplay": "Utilities/Templates/Modules/Scripted/TemplateKey.py: with slicer.util."
                           "tryWithErrorDisplay(message, waitCursor=True)",
    "launchConsoleProcess": "util.py: def launchConsoleProcess(args, useStartupEnvironment=True, cwd=None)",
    "pip_install": "util.py: def pip_install(requirements)",
    "VTKObservationMixin": "util.py: class VTKObservationMixin",
    "mainWindow": "util.py: def mainWindow() (slicer-core 5.13.31053.0's copy of Slicer's util.py)",
}
# MRML / VTK / Qt methods the application-side files call on Slicer objects, checked in Slicer's C++ headers
# (Libs/MRML/Core) and the scripted-module template.
CHECKED_METHODS = {
    "GetName": "vtkMRMLNode", "GetID": "vtkMRMLNode",
    "AddNewNodeByClass": "vtkMRMLScene", "GetFirstNodeByClass": "vtkMRMLScene",
    "GetNodeByID": "vtkMRMLScene", "Clear": "vtkMRMLScene",
    "StartCloseEvent": "vtkMRMLScene", "EndCloseEvent": "vtkMRMLScene",
    "PyTorchUtilsLogic": "PyTorchUtils extension (PyTorchUtils.py)", "SampleDataLogic": "SampleData module",
    "registerCustomSampleDataSource": "SampleData.py: SampleDataLogic.registerCustomSampleDataSource(..., "
                                      "loadFileType=...)",
    "QUrl": "Qt", "QTimer": "Qt", "QListWidgetItem": "Qt", "QApplication": "Qt", "QDateTime": "Qt",
    "QFileDialog": "Qt", "getSaveFileName": "QFileDialog (static)",
    "ModifiedEvent": "vtkCommand",
}


def _module_tree() -> ast.Module:
    return ast.parse(MODULE.read_text())


def _ui_custom_widgets() -> dict[str, str]:
    root = ET.parse(UI).getroot()
    extends = {cw.findtext("class"): cw.findtext("extends") for cw in root.iter("customwidget")}

    def base(name: str) -> str:
        while name in extends:
            name = extends[name]
        return name

    return {name: base(name) for name in extends}


def _ui_widgets() -> dict[str, str]:
    """object name -> class, for every widget in the .ui."""
    return {w.get("name"): w.get("class") for w in ET.parse(UI).getroot().iter("widget")}


@pytest.mark.parametrize("name", ["LightSeg.py", "LightSegAppTools.py", "LightSegLogic.py", "LightSegSelfTests.py"])
def test_module_files_compile(name):
    py_compile.compile(str(REPO / "LightSeg" / name), doraise=True)


@pytest.fixture(scope="module")
def loaded_ui(tmp_path_factory):
    """The .ui loaded by PySide6's QUiLoader in an offscreen QApplication."""
    from PySide6.QtCore import QFile
    from PySide6.QtUiTools import QUiLoader
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    qfile = QFile(str(plain_qt_ui(UI, tmp_path_factory.mktemp("ui") / "LightSeg.ui")))
    assert qfile.open(QFile.ReadOnly)
    widget = QUiLoader().load(qfile)
    qfile.close()
    assert widget is not None, "QUiLoader could not load LightSeg.ui"
    yield app, widget


def test_ui_loads_in_qt_and_has_every_widget_the_module_uses(loaded_ui):
    from PySide6.QtWidgets import QWidget

    _, widget = loaded_ui
    used = {node.attr for node in ast.walk(_module_tree())
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui" and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"}
    assert len(used) > 15
    for name in sorted(used):
        assert widget.findChild(QWidget, name) is not None, f"LightSeg.py uses ui.{name}, missing from LightSeg.ui"


def test_parameter_names_in_the_ui_match_the_parameter_node():
    tree = _module_tree()
    node_class = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "LightSegParameterNode")
    fields = {s.target.id: ast.unparse(s.annotation) for s in node_class.body if isinstance(s, ast.AnnAssign)}
    root = ET.parse(UI).getroot()
    bound = {}
    for w in root.iter("widget"):
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.findtext("string")] = w.get("class")
    expected_kind = {"qMRMLNodeComboBox": "vtkMRML", "QCheckBox": "bool", "QLineEdit": "str",
                     "QDoubleSpinBox": "float"}
    assert bound, "no widget is bound to the parameter node"
    for name, widget_class in bound.items():
        assert name in fields, f"the .ui binds {name!r}, which LightSegParameterNode lacks"
        assert fields[name].startswith(expected_kind[widget_class]), (name, widget_class, fields[name])


NOT_SLICER = {"self", "np", "sitk", "queue", "threading", "os", "json", "shutil", "tempfile"}  # Python's and ours


@pytest.mark.parametrize("path", APPLICATION_FILES, ids=lambda p: p.name)
def test_every_slicer_call_is_in_the_checked_api_list(path):
    tree = ast.parse(path.read_text())
    util_calls = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                  and ast.unparse(n.value) == "slicer.util"}
    util_calls |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "slicer.util"
                   for a in n.names}
    unchecked = util_calls - set(CHECKED_SLICER_UTIL)
    assert not unchecked, f"slicer.util names not checked against Slicer's source: {sorted(unchecked)}"
    camel_calls = {n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                   and n.func.attr[:1].isupper() and not (isinstance(n.func.value, ast.Name)
                                                          and n.func.value.id in NOT_SLICER)}
    unchecked = camel_calls - set(CHECKED_METHODS)
    assert not unchecked, f"MRML/VTK/Qt calls not checked against Slicer's source: {sorted(unchecked)}"


def _cmake_list(variable: str) -> list[str]:
    text = MODULE_CMAKE.read_text()
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, flags=re.S)
    assert match, variable
    return [w.replace("${MODULE_NAME}", "LightSeg") for w in match.group(1).split()]


def test_cmake_lists_every_file_it_installs_and_every_file_exists():
    module_files = _cmake_list("MODULE_PYTHON_SCRIPTS") + _cmake_list("MODULE_PYTHON_RESOURCES")
    for path in module_files:
        assert (REPO / "LightSeg" / path).is_file(), path
    library = set(_cmake_list("LIGHTSEGLIB_SCRIPTS"))
    resources = set(_cmake_list("LIGHTSEG_SHARED_RESOURCES"))
    for path in library | resources:
        assert (REPO / path).is_file(), path
    on_disk = {str(p.relative_to(REPO)) for p in (REPO / "LightSegLib").rglob("*.py")}
    assert on_disk == library, f"LightSegLib files not installed: {sorted(on_disk - library)}"
    shipped = {str(p.relative_to(REPO)) for d in ("Models", "SampleData", "Calibration")
               for p in (REPO / "Resources" / d).rglob("*") if p.is_file()}
    assert shipped == resources, f"resources not installed: {sorted(shipped - resources)}"
    module_resources = {str(p.relative_to(REPO / "LightSeg")) for p in (REPO / "LightSeg" / "Resources").rglob("*")
                        if p.is_file()}
    assert module_resources == set(_cmake_list("MODULE_PYTHON_RESOURCES"))
    top = (REPO / "CMakeLists.txt").read_text()
    for needed in ("find_package(Slicer REQUIRED)", "add_subdirectory(LightSeg)", "Slicer_EXTENSION_GENERATE_CONFIG",
                   "Slicer_EXTENSION_CPACK", 'EXTENSION_CATEGORY "Segmentation"', 'EXTENSION_DEPENDS "PyTorch"'):
        assert needed in top, needed
    assert "WITH_GENERIC_TESTS" in MODULE_CMAKE.read_text()


# The catalog entry rules of Slicer's "slicer-extension-catalog-entry-schema-v1.0.2" (Slicer/Slicer Schemas/):
# required $schema, category, scm_url; no other properties than these; scm_type git or local; tier 1..5.
CATALOG_RULES = {
    "type": "object",
    "required": ["$schema", "category", "scm_url"],
    "additionalProperties": False,
    "properties": {
        "$schema": {"type": "string"}, "category": {"type": "string"}, "scm_url": {"type": "string"},
        "scm_revision": {"type": "string"}, "scm_type": {"type": "string", "enum": ["git", "local"]},
        "build_dependencies": {"type": "array", "items": {"type": "string"}},
        "dicom_support_rule": {"type": "string"}, "build_subdirectory": {"type": "string"},
        "enabled": {"type": "boolean"}, "tier": {"type": "integer", "minimum": 1, "maximum": 5},
    },
}


def test_extensions_index_entry_validates():
    entry = json.loads((REPO / "LightSeg.json").read_text())
    jsonschema.validate(entry, CATALOG_RULES)
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.2.json#")
    assert entry["category"] == "Segmentation" and "PyTorch" in entry["build_dependencies"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**entry, "description": "not allowed here"}, CATALOG_RULES)


@pytest.mark.parametrize("order, flips", [((0, 1, 2), (False, False, False)), ((2, 0, 1), (True, False, True))])
def test_ras_geometry_round_trip(sample, order, flips):
    from LightSegLib.scene import ijk_to_ras_of, image_from_ras_array

    stored = sitk.Flip(sitk.PermuteAxes(sample, order), flips)
    matrix = ijk_to_ras_of(stored)
    assert np.allclose(matrix[:3, 3] * [-1, -1, 1], stored.GetOrigin())  # RAS origin is LPS with x, y negated
    back = image_from_ras_array(sitk.GetArrayViewFromImage(stored), matrix)
    for getter in ("GetOrigin", "GetSpacing", "GetDirection", "GetSize"):
        assert np.allclose(getattr(back, getter)(), getattr(stored, getter)(), atol=1e-9)


def test_terminology_entries_parse_as_slicer_terminology():
    from LightSegLib.io import PATTERN_SEGMENTS, SEGMENTS, segment_masks
    from LightSegLib.scene import segment_specs

    assert [s["name"] for s in segment_specs()] == ["Lungs", "Infection"]
    specs = {s["name"]: s for s in segment_specs(with_patterns=True)}
    assert set(specs) == {"Lungs", "Infection", "Ground-glass opacity", "Consolidation"}
    for segment in SEGMENTS + PATTERN_SEGMENTS:
        parsed = terminology_entry_from_string(specs[segment["name"]]["terminology"])
        assert parsed == segment["terminology"]
    labels, patterns = np.array([0, 1, 2, 1, 1]), np.array([0, 1, 0, 2, 1])
    masks = segment_masks(labels, patterns)
    assert masks["Lungs"].tolist() == [False, True, True, True, True]
    assert masks["Infection"].tolist() == [False, True, False, True, True]
    assert masks["GroundGlass"].tolist() == [False, True, False, False, True]
    assert masks["Consolidation"].tolist() == [False, False, False, True, False]


def test_results_rows_and_clipboard_text_from_a_real_report(untrained_card, sample):
    from LightSegLib.engine import Segmenter
    from LightSegLib.report import build_report
    from LightSegLib.scene import results_rows, rows_as_tsv

    result = Segmenter(untrained_card, "cpu").segment_volume(sample)
    report = build_report(result, untrained_card, "cpu", "sample")
    rows = results_rows(report)
    names = [r[0] for r in rows]
    assert names[:3] == ["Infection volume", "Lung volume", "Lungs involved"]
    assert "Right lung involved" in names and "Left lung involved" in names
    assert dict((r[0], r[1]) for r in rows)["Lung volume"] == f"{report['lung_volume_ml']:.0f}"
    text = rows_as_tsv(rows)
    assert text.splitlines()[0] == "Measure\tValue\tUnit" and len(text.splitlines()) == len(rows) + 1


def test_panel_renders_offscreen_with_a_results_table(tmp_path, loaded_ui):
    from PIL import Image

    report = {"infection_ml": 120.5, "lung_volume_ml": 6200.0, "percent_involved": 1.9,
              "lungs": {"right": {"volume_ml": 3150.0, "infection_ml": 70.0, "percent_involved": 2.2},
                        "left": {"volume_ml": 3050.0, "infection_ml": 50.5, "percent_involved": 1.7}},
              "model": {"id": "miniseg-covid", "version": "1.0.0"}, "device": "cpu",
              "timings_s": {"lung_mask": 1.0, "inference": 2.0, "total": 3.5}}
    out = tmp_path / "panel.png"
    render(report, out)
    with Image.open(out) as picture:
        assert picture.size == (440, 1064)  # the retrain panel's buttons in two rows keep it 440 wide
        assert len(np.unique(np.asarray(picture.convert("L")))) > 10  # drawn, not blank


@pytest.mark.parametrize("adapt", ["input", "all"])
def test_the_retrain_panel_passes_only_options_lightseg_finetune_accepts(adapt):
    from LightSegLib.cli import build_parser

    logic = ast.parse((REPO / "LightSeg" / "LightSegLogic.py").read_text())
    start = next(n for n in ast.walk(logic) if isinstance(n, ast.FunctionDef) and n.name == "prepareFinetune")
    passed = {n.value for n in ast.walk(start) if isinstance(n, ast.Constant) and isinstance(n.value, str)
              and n.value.startswith("--")}
    argv = ["finetune", "--base", "miniseg-covid", "--name", "site", "--pairs", "pairs.csv", "--negative-volumes",
            "without-infection", "--minutes", "5", "--progress-json", "--force", "--adapt", adapt]
    assert passed == {a for a in argv if a.startswith("--")}  # every option the panel passes is exercised here
    args = build_parser().parse_args(argv)  # argparse exits on an unknown option or a bad choice
    assert args.adapt == adapt and args.pairs.name == "pairs.csv"
    assert args.negative_volumes.name == "without-infection"
