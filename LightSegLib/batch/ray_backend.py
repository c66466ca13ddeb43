"""Studies on a Ray cluster: one actor per GPU (or per CPU), each holding one loaded model; results streamed back."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Iterable

from ..errors import LightSegError
from .job import BatchSettings, StudyRunner, failed_row
from .studies import Study


def run_ray(studies: Iterable[Study], settings: BatchSettings, address: str,
            on_row: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Connect to the cluster at ``address`` (``auto``: the one ``ray start --head`` started on this machine) and
    segment the studies; returns what the actors ran on. Every node must see the input and output paths (a shared
    filesystem): a study travels as its path, and each actor reads and writes the files itself."""
    import ray
    from ray.util import ActorPool

    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise LightSegError(f"cannot connect to a Ray cluster ({str(exc).splitlines()[0]})", address) from None
    try:
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
        if gpus:  # one GPU per actor; the network is the work, the CPU threads only feed it
            actor_options, count = {"num_gpus": 1, "num_cpus": 1}, gpus
            settings = replace(settings, device="cuda")
        else:
            actor_options, count = {"num_cpus": 1}, max(cpus, 1)
            settings = replace(settings, threads=1)
        remote_runner = ray.remote(StudyRunner).options(**actor_options)
        pool = ActorPool([remote_runner.remote(settings) for _ in range(count)])
        studies = list(studies)
        finished: set[str] = set()
        try:
            # the pool hands a study to an actor only when it is free: a bounded number in flight
            for row in pool.map_unordered(lambda actor, study: actor.run.remote(study), studies):
                finished.add(row["id"])
                on_row(row)
        except ray.exceptions.RayError as exc:
            for study in studies:
                if study.id not in finished:
                    on_row(failed_row(study, f"{study.path}: not finished: {type(exc).__name__}"))
        return {"actors": count, "per_actor": actor_options, "device": settings.device}
    finally:
        ray.shutdown()
