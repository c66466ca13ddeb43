"""Freed memory kept for reuse (``allocator.py``): measured as page faults in a fresh interpreter, not assumed."""

import subprocess
import sys

import pytest

from conftest import REPO

LOOP = """
import resource, sys
import numpy as np
from LightSegLib.allocator import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False

def two_buffers():  # 60 MB in two blocks, freed top first: what a batch's temporaries do
    first = np.ones(30_000_000, np.uint8)
    second = np.ones(30_000_000, np.uint8)
    del second, first

two_buffers()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    two_buffers()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES_TOUCHED = 10 * 60_000_000 // 4096


def _faults(mode: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", LOOP, mode], capture_output=True, text=True, check=True, cwd=REPO,
                         timeout=120).stdout
    kept, faults = out.split()
    return kept == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings exist on Linux only")
def test_freed_memory_is_reused_instead_of_faulted_back_in():
    kept, faults = _faults("keep")
    assert kept
    assert faults < 0.01 * PAGES_TOUCHED  # the ten rounds reuse the first round's pages
    _, default_faults = _faults("default")
    assert default_faults > faults  # what the setting is for: glibc's default hands the memory back each round
