"""Studies on a pool of local worker processes, each holding one loaded model."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable

from .job import BatchSettings, StudyRunner, failed_row
from .studies import Study

_runner: StudyRunner | None = None  # the model of this worker process


def _start_worker(settings: BatchSettings) -> None:
    global _runner
    _runner = StudyRunner(settings)


def _run_study(study: Study, upcoming: Study | None) -> dict[str, Any]:
    assert _runner is not None
    return _runner.run(study, upcoming)


def run_local(studies: Iterable[Study], settings: BatchSettings, workers: int,
              on_row: Callable[[dict[str, Any]], None]) -> None:
    """Segment the studies on ``workers`` processes. At most two studies per worker are queued at a time, and a
    queued study is only a path: decoded volumes live in the workers, one each (two for a single worker, which reads ahead), so memory stays
    bounded. While one
    worker reads or writes a study, the others run the network. A single worker reads the next study on a thread
    while the network runs on the current one."""
    pending: dict[Future, Study] = {}
    ordered = list(studies)
    upcoming = {id(study): following for study, following in zip(ordered, ordered[1:])} if workers == 1 else {}
    queue = iter(ordered)
    # spawn: a fresh interpreter per worker (forking a process that may hold torch's threads is unsafe)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(settings,)) as pool:
        while True:
            for study in queue:
                pending[pool.submit(_run_study, study, upcoming.get(id(study)))] = study
                if len(pending) >= 2 * workers:
                    break
            if not pending:
                return
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                study = pending.pop(future)
                try:
                    on_row(future.result())
                except BrokenProcessPool:
                    on_row(failed_row(study, f"{study.path}: the worker process died (out of memory?)"))
                    for other in [*pending.values(), *queue]:
                        on_row(failed_row(other, f"{other.path}: not run: a worker process died"))
                    return
