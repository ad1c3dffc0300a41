"""Epoch time of one training stage at 1 and at N data-parallel processes on this machine (issue 15).

    .venv/bin/python bench/scaling_bench.py [--nproc 2] [--epochs 5] [--also-threads] [--json out.json]

Trains the same tiny synthetic recipe (LeNet-5, 2048 images of 32x32, global batch 64) as one process with one
thread and as `robot-compress run --nproc N` (N ranks, cores / N threads each, gloo); with --also-threads also
as one process with every core as a thread; all in a loopback-only network namespace (confined.py). Reports the
median epoch time after the first (warm-up) epoch, items/s and the ratio 1x1-process / N-process time: a
measurement of this machine under its current load (the load average is printed beside it), not a goal.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from robot_compress.compress import confined  # noqa: E402

ITEMS = 2048


def recipe(epochs: int) -> dict:
    return {"name": "scaling_bench", "seed": 0,
            "dataset": {"kind": "synthetic_cls", "input_size": [32, 32], "val_fraction": 0.2, "seed": 0,
                        "options": {"n": int(ITEMS / 0.8), "num_classes": 8}},
            "student": {"model": "lenet5"},
            "stages": [{"stage": "train", "model": "student", "epochs": epochs, "lr": 0.05, "batch_size": 64}]}


def measure(path: Path, out: Path, nproc: int, threads: int, timeout: float) -> dict:
    import torch

    env = dict(os.environ, OMP_NUM_THREADS=str(threads), GLOO_SOCKET_IFNAME="lo",
               TORCH_CPP_LOG_LEVEL="ERROR")  # c10d cannot name hosts inside the namespace: noise, not news
    argv = [sys.executable, "-m", "robot_compress.cli", "run", str(path), "--out", str(out), "--nproc", str(nproc)]
    print(f"training with {nproc} process(es) x {threads} thread(s)...", file=sys.stderr, flush=True)
    res = confined.run(argv, timeout=timeout, env=env)
    if res.returncode != 0:
        raise SystemExit(f"{nproc} process(es) failed ({res.returncode}): {res.stderr[-2000:]}")
    history = torch.load(out / "checkpoints" / "00_train_student.pt", weights_only=True)["history"]
    seconds = [h["seconds"] for h in history]
    steady = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
    return {"nproc": nproc, "threads_per_process": threads, "epoch_seconds": seconds,
            "median_epoch_s": round(steady, 3), "items_per_s": round(ITEMS / steady, 1),
            "final_train_loss": history[-1]["train_loss"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--also-threads", action="store_true", help="add 1 process x all cores as threads")
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # unwind: confined.run then stops its namespace
    ok, why = confined.available()
    if not ok:
        print(f"skipped: {why}")
        return 0
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe(args.epochs)))
        # 1 process x 1 thread is the baseline of the ratio: a process per core against one core. 1 process with
        # every core as threads is shown beside it (on a busy machine OpenMP's threads can wait on each other).
        cores = os.cpu_count() or 1
        plan = [(1, 1), (args.nproc, max(1, cores // args.nproc))] + ([(1, cores)] if args.also_threads else [])
        rows = [measure(path, Path(tmp) / f"n{n}t{t}", n, t, args.timeout) for n, t in plan]
    ratio = rows[0]["median_epoch_s"] / rows[1]["median_epoch_s"]
    result = {"machine": f"{os.cpu_count()} cores", "load_avg_1m_before": round(load_before[0], 2),
              "load_avg_1m_after": round(os.getloadavg()[0], 2), "items_per_epoch": ITEMS, "global_batch": 64,
              "runs": rows, f"speedup_1x1_to_{args.nproc}_processes": round(ratio, 3)}
    print("| processes | threads each | epoch (median after the first) | items/s |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['nproc']} | {r['threads_per_process']} | {r['median_epoch_s']:.2f} s | {r['items_per_s']:.0f} |")
    print(f"speed-up 1 process x 1 thread -> {args.nproc} processes: {ratio:.2f}x (load average "
          f"{result['load_avg_1m_before']} before, {result['load_avg_1m_after']} after)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
