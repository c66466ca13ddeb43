"""What the module needs from the Slicer application besides its widgets: installing its dependencies (through the
PyTorch extension and pip, after asking) and running ``lightseg finetune`` in a console process."""

import json
import logging
import os
import shutil

import qt
import slicer

from LightSegLogic import MODULE_DIR


# LightSegLib's needs beyond what Slicer ships (import name: pip package; all have wheels for Slicer's Python);
# SimpleITK, numpy and VTK are Slicer's own and are never installed or upgraded by LightSeg
EXTRA_PACKAGES = {"scipy": "scipy", "cc3d": "connected-components-3d", "slicerio": "slicerio", "tqdm": "tqdm",
                  "PIL": "pillow"}


def ensureDependencies():
    """Ask before installing anything: torch through the PyTorch extension, then the small extras with pip."""
    import importlib.util

    if not ensureTorch():
        return False
    missing = [pkg for module, pkg in EXTRA_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        if not slicer.util.confirmOkCancelDisplay(
                f"LightSeg needs these Python packages: {', '.join(missing)}. Install them now with pip? "
                "(Slicer's own SimpleITK, numpy and VTK are not touched.)"):
            return False
        slicer.util.pip_install(" ".join(missing))
    return True


def ensureTorch():
    """torch through the PyTorch extension, after asking; never pip over Slicer's own packages."""
    try:
        import PyTorchUtils
    except ImportError:
        slicer.util.errorDisplay("LightSeg needs the PyTorch extension: install it from the Extensions Manager.")
        return False
    torchLogic = PyTorchUtils.PyTorchUtilsLogic()
    if not torchLogic.torchInstalled():
        if not slicer.util.confirmOkCancelDisplay(
                "LightSeg needs PyTorch (the 'torch' package, about 200 MB for the CPU build). Install it now "
                "through the PyTorch extension? Slicer may need a restart afterwards."):
            return False
        if torchLogic.installTorch(askConfirmation=False) is None:
            slicer.util.errorDisplay("PyTorch could not be installed; see the Python console.")
            return False
    return True


class FinetuneProcess:
    """``lightseg finetune --progress-json`` in Slicer's Python, outside the GUI process; Stop = stop file, then kill.

    A reader thread queues the process's output lines; a timer in the GUI thread hands them to ``onEvent``, so the
    GUI never waits on the pipe.
    """

    def __init__(self, args, workDir, onEvent):
        import queue
        import threading

        self.workDir = workDir
        self.stopFile = os.path.join(workDir, "STOP")
        self.onEvent = onEvent
        self.lines = queue.Queue()
        self.lastText = ""
        self.killDeadline = None
        self.process = slicer.util.launchConsoleProcess(args + ["--stop-file", self.stopFile], cwd=MODULE_DIR)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.timer = qt.QTimer()
        self.timer.setInterval(300)
        self.timer.connect("timeout()", self.poll)
        self.timer.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(line)

    def poll(self):
        while not self.lines.empty():
            text = self.lines.get().strip()
            if not text:
                continue
            try:
                self.onEvent(json.loads(text))
            except ValueError:
                self.lastText = text
                logging.info(text)
        if self.killDeadline is not None and qt.QDateTime.currentMSecsSinceEpoch() > self.killDeadline:
            self.process.kill()
        if self.process.poll() is not None and not self.reader.is_alive() and self.lines.empty():
            self.timer.stop()
            if self.process.returncode != 0:
                self.onEvent({"event": "failed",
                              "message": self.lastText or f"fine-tuning exited with code {self.process.returncode}"})
            shutil.rmtree(self.workDir, ignore_errors=True)  # the site data written for the run

    @property
    def finished(self):
        return not self.timer.isActive()

    def stop(self):
        open(self.stopFile, "w").close()
        self.killDeadline = qt.QDateTime.currentMSecsSinceEpoch() + 60_000
