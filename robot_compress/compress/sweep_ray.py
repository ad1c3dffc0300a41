"""`robot-compress sweep --executor ray`: the same grid as sweep.run_sweep, each base and cell a Ray task.

Ray schedules the tasks on the cluster's CPUs/GPUs (`cpus_per_cell`, `gpus_per_cell`), starts a cell once its
base's task has finished (the base's result is an argument of the cell's task), and reruns a task whose worker
process died (`max_retries`; an exception raised by the cell itself is not retried). Every task runs
sweep.run_or_skip, so the output layout, the skip/resume rules and the metrics are the sequential sweep's; a
retried cell resumes from its last finished epoch. The output dir must be visible to every node (a shared
filesystem on a multi-node cluster).

Without `address` a local Ray instance is started for the sweep and stopped after it (no dashboard).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from robot_compress.compress import recipe as rc
from robot_compress.compress.sweep import SweepError, base_dir_of, base_recipe, cell_dir, cell_recipe, check_grid


def _run_in_worker(recipe: rc.Recipe, run_dir: str, mode: str, trust: bool, threads: int, *after) -> dict:
    """Body of every task: `after` holds the results this task waits for (its base), unused otherwise."""
    import torch

    from robot_compress.compress.pipeline import load_data
    from robot_compress.compress.sweep import run_or_skip

    torch.set_num_threads(max(1, threads))  # the CPUs Ray reserved for this cell, no more
    return run_or_skip(recipe, Path(run_dir), load_data(recipe.dataset), mode, trust, print)


def _run_cell_in_worker(recipe: rc.Recipe, base_dir: str, kd: bool, criterion: str, amount: float, run_dir: str,
                        mode: str, trust: bool, threads: int, base_done: dict) -> dict:
    # Built here, after the base finished: the cell starts from the base's student.pt.
    cell = cell_recipe(recipe, Path(base_dir), kd, criterion, amount)
    return _run_in_worker(cell, run_dir, mode, trust, threads)


def _unwrap(exc: BaseException, what: str) -> BaseException:
    """A cell's own error as it was raised (one line at the CLI); a worker that died beyond retries as one
    SweepError naming the cell."""
    import ray.exceptions as rex

    if isinstance(exc, rex.RayTaskError) and isinstance(exc.cause, Exception):
        return exc.cause
    if isinstance(exc, (rex.WorkerCrashedError, rex.NodeDiedError, rex.OutOfMemoryError)):
        return SweepError(f"{what}: its Ray worker died and the retries are spent ({type(exc).__name__})")
    return exc


def run_sweep_ray(recipe: rc.Recipe, out_dir: str | Path, criteria, amounts, kd_modes=(True, False),
                  log: Callable[[str], None] = print, mode: str = "auto", trust_checkpoints: bool = False,
                  address: str | None = None, cpus_per_cell: float = 1, gpus_per_cell: float = 0,
                  max_retries: int = 2, num_cpus: int | None = None) -> list[dict]:
    """The cells' metrics in the sequential sweep's order. `address`: a running cluster ("auto" or
    "ray://host:10001"); None starts a local instance with `num_cpus` (default: all) and stops it after."""
    try:
        import ray
    except ImportError:
        raise SweepError("--executor ray needs Ray: pip install -r requirements/cluster.txt") from None

    out = Path(out_dir).resolve()  # workers may run elsewhere: absolute paths
    check_grid(recipe, out, criteria, amounts, mode)
    started = not ray.is_initialized()
    if started and address is None:
        ray.init(include_dashboard=False, num_cpus=num_cpus, _node_ip_address="127.0.0.1", log_to_driver=True)
    elif started:
        ray.init(address=address, log_to_driver=True)
    try:
        options = {"num_cpus": cpus_per_cell, "num_gpus": gpus_per_cell, "max_retries": max_retries,
                   "retry_exceptions": False}
        base_task = ray.remote(**options)(_run_in_worker)
        cell_task = ray.remote(**options)(_run_cell_in_worker)
        threads = max(1, int(cpus_per_cell))
        names, refs = [], []
        for kd in kd_modes:
            base_dir = base_dir_of(out, kd)
            base_ref = base_task.remote(base_recipe(recipe, kd), str(base_dir), mode, trust_checkpoints, threads)
            for criterion in criteria:
                for amount in amounts:
                    cdir = cell_dir(out, kd, criterion, float(amount))
                    names.append(str(cdir.relative_to(out)))
                    refs.append(cell_task.remote(recipe, str(base_dir), kd, criterion, float(amount), str(cdir),
                                                 mode, trust_checkpoints, threads, base_ref))
        log(f"sweep on Ray: {len(refs)} cells, {cpus_per_cell:g} CPU / {gpus_per_cell:g} GPU each, "
            f"{max_retries} retries on a worker's death")
        results = []
        for name, ref in zip(names, refs, strict=True):
            try:
                results.append(ray.get(ref))
            except Exception as exc:  # noqa: BLE001 - re-raised as the cell's own error
                for other in refs:  # a remote cluster outlives this driver: stop the cells still queued
                    ray.cancel(other, force=True)
                raise _unwrap(exc, f"cell {name}") from None
            log(f"cell {name} done")
        return results
    finally:
        if started:
            ray.shutdown()
