"""The one exception type that reaches users as a one-line message (exit code 2 in the CLI)."""

from __future__ import annotations

from pathlib import Path


class LightSegError(Exception):
    """A problem with the user's input or environment, reported as ``<path>: <problem>``."""

    def __init__(self, problem: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
