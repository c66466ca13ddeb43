"""Render the LightSeg panel (LightSeg.ui) to PNG with PySide6, offscreen, for the README walkthrough.

    QT_QPA_PLATFORM=offscreen python scripts/render_panel.py [--report demo-output/sample-report.json] -o panel.png

Slicer's own widgets (MRML node selectors, collapsible buttons, the MRML table view) are drawn as the Qt classes they
extend, so they look plainer than in Slicer; the layout, labels and controls are the module's.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UI = REPO / "LightSeg" / "Resources" / "UI" / "LightSeg.ui"
sys.path.insert(0, str(REPO))


# For the picture only: Qt widgets that look like the Slicer ones (a titled box for a collapsible section, a combo box
# for a node selector). The tests load the .ui with the classes the .ui itself declares as bases.
DISPLAY_STAND_INS = {"ctkCollapsibleButton": "QGroupBox", "qMRMLNodeComboBox": "QComboBox",
                     "qMRMLSegmentSelectorWidget": "QComboBox", "ctkPathLineEdit": "QLineEdit"}


def plain_qt_ui(ui_path: Path, out_path: Path, display: bool = False) -> Path:
    """The .ui with Slicer's custom widgets replaced by the Qt classes they extend (or, with ``display``, by
    look-alike stand-ins), and without the MRML-scene signal connections that only Slicer's widgets have."""
    root = ET.parse(ui_path).getroot()
    extends = {cw.findtext("class"): cw.findtext("extends") for cw in root.iter("customwidget")}

    def base(name: str) -> str:
        if display and name in DISPLAY_STAND_INS:
            return DISPLAY_STAND_INS[name]
        while name in extends:
            name = extends[name]
        return name

    text = ui_path.read_text()
    for custom in extends:
        text = re.sub(rf'class="{custom}"', f'class="{base(custom)}"', text)
    if display:  # a group box shows its "title", a collapsible button its "text"
        text = re.sub(r'(<widget class="QGroupBox"[^>]*>\s*<property name=")text(")', r"\1title\2", text)
    text = re.sub(r"<customwidgets>.*?</customwidgets>", "", text, flags=re.S)
    text = re.sub(r"<connections>.*?</connections>", "", text, flags=re.S)
    out_path.write_text(text)
    return out_path


def render(report: dict | None, output: Path) -> None:
    from PySide6.QtCore import QFile
    from PySide6.QtGui import QStandardItem, QStandardItemModel
    from PySide6.QtUiTools import QUiLoader
    from PySide6.QtWidgets import QApplication, QComboBox, QLabel, QLineEdit, QProgressBar, QTableView, QWidget

    from LightSegLib import registry
    from LightSegLib.scene import results_rows

    app = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory() as tmp:
        qfile = QFile(str(plain_qt_ui(UI, Path(tmp) / "LightSeg.ui", display=True)))
        qfile.open(QFile.ReadOnly)
        panel = QUiLoader().load(qfile)
        qfile.close()
    find = panel.findChild
    for name in ("modelSelector", "baseModelSelector"):
        find(QComboBox, name).addItems([e.card.id for e in registry.list_models()])
    find(QComboBox, "deviceSelector").addItems(["auto", "cpu", "cuda"])
    for name, item in (("inputVolumeSelector", "P001-chest"), ("outputSegmentationSelector", "P001-chest infection"),
                       ("trainingVolumeSelector", "P001-chest"),
                       ("trainingSegmentSelector", "P001-chest infection: Infection")):
        find(QComboBox, name).addItem(item)
    find(QLineEdit, "newModelNameEdit").setText("site-model")
    find(QLabel, "gpuDiagnosticsLabel").setText("torch 2.13.0+cpu (CUDA build None): no CUDA device (CPU will be used)")
    if report:
        rows = results_rows(report)
        model = QStandardItemModel(len(rows), 3)
        model.setHorizontalHeaderLabels(["Measure", "Value", "Unit"])
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                model.setItem(r, c, QStandardItem(value))
        table = find(QTableView, "resultsTableView")
        table.setModel(model)
        table.resizeColumnsToContents()
        find(QProgressBar, "progressBar").setValue(100)
        find(QLabel, "statusLabel").setText(f"Done in {report['timings_s']['total']:.1f} s on {report['device']}.")
    panel.resize(440, 980)
    panel.show()
    app.processEvents()
    panel.grab().save(str(output))
    panel.close()
    assert isinstance(panel, QWidget)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, help="a lightseg segment report to fill the results table")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    render(json.loads(args.report.read_text()) if args.report else None, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
