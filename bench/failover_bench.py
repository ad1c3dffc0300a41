"""Failover under faults: one table row per fault, the OffloadProcessor streaming 30 Hz frames through the
fault proxy to a real Triton server, with the local model as fallback. Prints a table; asserts nothing.

Each row: `--seconds` of frames; the fault starts at 1/3 and ends at 2/3 of the run (kill: the server is
killed, then restarted). switch-over = latency of the first frame received after the fault starts (how long
that frame waited for its result); recovery = fault end -> first edge result.

    .venv/bin/python bench/failover_bench.py [--seconds 6] [--teacher-hw 360 480]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FAULTS = ("none", "link_down", "blackhole", "latency_300ms", "stalls_20pct", "bandwidth_2mbit", "flap_2s",
          "server_kill", "garbage")


def run_row(fault, engine, server, garbage_url, cfg, seconds, frame):
    from robot_compress.runtime.edge_client import EdgeClient
    from robot_compress.runtime.offload import OffloadProcessor
    from robot_compress.tools.faultproxy import FaultProxy

    proxy = FaultProxy(server.http_port, max_lifetime_s=seconds + 120)
    url = garbage_url if fault == "garbage" else proxy.url
    proc = OffloadProcessor(engine, EdgeClient(url, "teacher_seg", engine.meta, payload="jpeg"), cfg)
    n = int(seconds * 30)
    start_fault, end_fault = n // 3, 2 * n // 3
    log, t_fault, t_end = [], None, None
    restarted = {}

    def restart():  # in the background: frames keep flowing while Triton starts
        server.start()
        restarted["at"] = time.monotonic()

    t0 = time.monotonic()
    i = 0
    while i < n or (fault == "server_kill" and ("at" not in restarted or time.monotonic() < restarted["at"] + 3)
                    and time.monotonic() < t0 + seconds + 60):
        time.sleep(max(0.0, t0 + i / 30 - time.monotonic()))
        if i == start_fault:
            t_fault = time.monotonic()
            {"link_down": proxy.link_down, "blackhole": proxy.blackhole,
             "latency_300ms": lambda: proxy.latency(300), "stalls_20pct": lambda: proxy.stalls(0.2, 0.5),
             "bandwidth_2mbit": lambda: proxy.bandwidth(250_000), "flap_2s": lambda: proxy.flap(2.0),
             "server_kill": server.kill}.get(fault, lambda: None)()
        if i == end_fault:
            if fault == "server_kill":
                threading.Thread(target=restart, daemon=True).start()
            proxy.passthrough()
            t_end = time.monotonic()
        received = time.monotonic()
        try:
            r = proc.process(frame, received, received + cfg.deadline_s)
            log.append((received, r.source, r.latency_ms))
        except Exception:  # noqa: BLE001 - counted as a frame without a result
            log.append((received, None, float("nan")))
        i += 1
    n = len(log)
    if fault == "server_kill":
        t_end = restarted.get("at", float("inf"))  # recovery counts from "server ready again"
    st = proc.status()
    proc.close()
    proxy.close()
    lat = np.array([row[2] for row in log if row[1]])
    after = [row for row in log if row[0] >= t_fault]
    switch = after[0][2] if after and fault not in ("none",) else float("nan")
    back = next((row for row in log if row[0] >= t_end and row[1] == "edge"), None)
    recovery = (back[0] - t_end) if back else float("nan")
    return {
        "fault": fault, "in": n, "out": sum(1 for row in log if row[1]),
        "edge": sum(1 for row in log if row[1] == "edge"), "local": sum(1 for row in log if row[1] == "local"),
        "p50": np.percentile(lat, 50), "p95": np.percentile(lat, 95), "max": lat.max(),
        "switch": switch, "recovery": recovery, "edge_pct": 100.0 * sum(1 for row in log if row[1] == "edge") / n,
        "transitions": st["transitions"], "misses": st["deadline_misses"],
    }


def warm_up(server, engine, frame, n: int = 10) -> None:
    """Untimed requests straight to the server before the first row: its first inferences (lazy allocations,
    the first JPEG decode, connection setup) ran up to 90 ms and read as faults in the fault-free row."""
    from robot_compress.runtime.edge_client import EdgeClient

    client = EdgeClient(server.url, "teacher_seg", engine.meta, payload="jpeg")
    try:
        for _ in range(n):
            client.infer(frame, timeout_s=10.0)
    finally:
        client.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--teacher-hw", type=int, nargs=2, default=[360, 480])
    ap.add_argument("--faults", default=",".join(FAULTS))
    ap.add_argument("--deadline-ms", type=float, default=100.0, help="node default frame_deadline_ms")
    ap.add_argument("--hedge-ms", type=float, default=40.0, help="node default hedge_after_ms")
    args = ap.parse_args(argv)

    from robot_compress.runtime.engine import Engine
    from robot_compress.runtime.failover import FailoverConfig
    from robot_compress.tools.faultproxy import MisbehavingServer
    from robot_compress.tools.serve import EdgeServerProcess
    from robot_compress.tools.synthetic_models import make_model

    tmp = Path(tempfile.mkdtemp(prefix="failover_bench_"))
    hw = tuple(args.teacher_hw)
    teacher = make_model(tmp / "teacher.onnx", input_size=hw, seed=1, model_id="teacher_seg")
    student = make_model(tmp / "student.onnx", input_size=(hw[0] // 2, hw[1] // 2), seed=2, model_id="student_seg")
    engine = Engine(student)
    # the node's default parameters unless overridden
    cfg = FailoverConfig(deadline_s=args.deadline_ms / 1000, hedge_after_s=args.hedge_ms / 1000,
                         failure_threshold=5, recovery_probes=3,
                         probe_interval_s=0.2, probe_backoff=2.0, probe_backoff_max_s=1.0)
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    rows = []
    with EdgeServerProcess([teacher], payloads=("jpeg",), log_path=tmp / "server.log") as server, \
            MisbehavingServer("teacher_seg", hw, engine.meta.num_classes, kind="bad_class",
                              max_lifetime_s=3600) as garbage:
        warm_up(server, engine, frame)
        for fault in args.faults.split(","):
            rows.append(run_row(fault, engine, server, garbage.url, cfg, args.seconds, frame))
            print(f"  done: {fault}", file=sys.stderr, flush=True)
    print(f"\n30 Hz, {args.seconds:.0f} s per row, fault from 1/3 to 2/3; deadline {cfg.deadline_s * 1000:.1f} ms, "
          f"hedge after {cfg.hedge_after_s * 1000:.0f} ms; teacher {hw[0]}x{hw[1]}, student {hw[0] // 2}x{hw[1] // 2}, "
          "JPEG payload\n")
    head = ("fault", "in", "out", "edge", "local", "p50 ms", "p95 ms", "max ms", "switch ms", "recover s",
            "on edge %", "transitions", "late")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for r in rows:
        print(f"| {r['fault']} | {r['in']} | {r['out']} | {r['edge']} | {r['local']} | {r['p50']:.1f} | "
              f"{r['p95']:.1f} | {r['max']:.1f} | {r['switch']:.1f} | {r['recovery']:.2f} | {r['edge_pct']:.0f} | "
              f"{r['transitions']} | {r['misses']} |")


if __name__ == "__main__":
    main()
