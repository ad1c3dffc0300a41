"""Failover under faults: one table row per fault, the OffloadProcessor streaming 30 Hz frames through the
fault proxy to a real Triton server, with the local model as fallback. Prints a table; asserts nothing.

Each row: `--seconds` of frames; the fault starts at 1/3 and ends at 2/3 of the run (kill: the server is
killed, then restarted). switch-over = latency of the first frame received after the fault starts (how long
that frame waited for its result); recovery = fault end -> first edge result.

Replica rows (`--replica-rows all`, printed as a second table after the first; off by default because
bench/run_all.py parses the first table only): the same server behind one fault proxy per replica
(independent links), the fault on for the whole row: 20 % stalls on every link with one replica and with two
(P99 is the point), in mode auto and in mode edge (`_edge`: no local model, as in FogROS2-FT; a frame no
replica answers in time fails, its latency is the time to the failure), and two replicas with the first one
blackholed.

    .venv/bin/python bench/failover_bench.py [--seconds 6] [--teacher-hw 360 480] [--faults none,...]
    .venv/bin/python bench/failover_bench.py --models shipped   # the shipped CamVid teacher and student, 5 Hz

By default the edge serves a synthetic stand-in (a 1x1 conv, ~1 ms) so the rows show the failover mechanics at
30 Hz, as an edge GPU would answer. `--models shipped` serves models/camvid_teacher_fp16.onnx on the edge and runs
models/camvid_lraspp_student.onnx locally; the edge shares this 2-core CPU (~65-100 ms per teacher frame), so that
mode streams at 5 Hz with a 400 ms deadline and a 300 ms hedge, as `make demo` does.
    .venv/bin/python bench/failover_bench.py --faults "" --replica-rows all --seconds 6 --teacher-hw 180 240
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
REPLICA_ROWS = ("stalls_20pct_x1", "stalls_20pct_x2", "stalls_20pct_x1_edge", "stalls_20pct_x2_edge",
                "one_blackholed_x2")


RATE_HZ = {"synthetic": 30.0, "shipped": 5.0}
SHIPPED = ("camvid_teacher_fp16.onnx", "camvid_lraspp_student.onnx")  # (edge, local) in models/


def run_row(fault, engine, server, garbage_url, cfg, seconds, frame, model_id="teacher_seg", rate_hz=30.0):
    from robot_compress.runtime.edge_client import EdgeClient
    from robot_compress.runtime.offload import OffloadProcessor
    from robot_compress.tools.faultproxy import FaultProxy

    proxy = FaultProxy(server.http_port, max_lifetime_s=seconds + 120)
    url = garbage_url if fault == "garbage" else proxy.url
    proc = OffloadProcessor(engine, EdgeClient(url, model_id, engine.meta, payload="jpeg"), cfg)
    n = int(seconds * rate_hz)
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
        time.sleep(max(0.0, t0 + i / rate_hz - time.monotonic()))
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


def run_replica_row(row, engine, server, cfg, seconds, frame):
    """One replica row: `row` is <fault>_x<replicas>[_edge]; the fault holds for the whole row."""
    import dataclasses

    from robot_compress.runtime.edge_client import EdgeClient
    from robot_compress.runtime.offload import EdgeUnavailableError, OffloadProcessor
    from robot_compress.tools.faultproxy import FaultProxy

    edge_only = row.endswith("_edge")
    fault, count = row.removesuffix("_edge").rsplit("_x", 1)
    proxies = [FaultProxy(server.http_port, max_lifetime_s=seconds + 120, seed=i) for i in range(int(count))]
    for i, proxy in enumerate(proxies):
        if fault == "stalls_20pct":
            proxy.stalls(0.2, 0.5)
        elif fault == "one_blackholed" and i == 0:
            proxy.blackhole()
    clients = [EdgeClient(p.url, "teacher_seg", engine.meta, payload="jpeg") for p in proxies]
    proc = OffloadProcessor(engine, clients, dataclasses.replace(cfg, mode="edge" if edge_only else "auto"))
    log = []
    t0 = time.monotonic()
    for i in range(int(seconds * 30)):
        time.sleep(max(0.0, t0 + i / 30 - time.monotonic()))
        received = time.monotonic()
        try:
            r = proc.process(frame, received, received + cfg.deadline_s)
            log.append((r.source, r.edge_replica, r.latency_ms))
        except EdgeUnavailableError:  # no replica answered in time: a frame without a result
            log.append((None, None, (time.monotonic() - received) * 1000.0))
    st = proc.status()
    proc.close()
    for proxy in proxies:
        proxy.close()
    lat = np.array([row[2] for row in log])
    by_replica = [sum(1 for row in log if row[1] == p.url) for p in proxies]
    return {"row": row, "in": len(log), "local": sum(1 for row in log if row[0] == "local"),
            "failed": sum(1 for row in log if row[0] is None),
            "by_replica": "/".join(map(str, by_replica)), "p50": np.percentile(lat, 50),
            "p95": np.percentile(lat, 95), "p99": np.percentile(lat, 99), "max": lat.max(),
            "stalled": sum(p.stalled for p in proxies), "misses": st["deadline_misses"]}


def print_replica_rows(rows, cfg) -> None:
    print(f"\nReplicas: 30 Hz, fault for the whole row, one fault proxy per replica, replica hedge "
          f"{cfg.replica_hedge_s * 1000:.0f} ms, local hedge {cfg.hedge_after_s * 1000:.0f} ms\n")
    print_table(("row", "in", "edge per replica", "local", "no result", "p50 ms", "p95 ms", "p99 ms", "max ms",
                 "stalled requests", "late"),
                [(r["row"], r["in"], r["by_replica"], r["local"], r["failed"], f"{r['p50']:.1f}", f"{r['p95']:.1f}",
                  f"{r['p99']:.1f}", f"{r['max']:.1f}", r["stalled"], r["misses"]) for r in rows])


def warm_up(server, engine, frame, n: int = 10, model_id: str = "teacher_seg") -> None:
    """Untimed requests straight to the server before the first row: its first inferences (lazy allocations,
    the first JPEG decode, connection setup) ran up to 90 ms and read as faults in the fault-free row."""
    from robot_compress.runtime.edge_client import EdgeClient

    client = EdgeClient(server.url, model_id, engine.meta, payload="jpeg")
    try:
        for _ in range(n):
            client.infer(frame, timeout_s=10.0)
    finally:
        client.close()



def print_table(head: tuple, rows: list[tuple]) -> None:
    """A markdown table on stdout (bench/run_all.py parses it back)."""
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--teacher-hw", type=int, nargs=2, default=[360, 480])
    ap.add_argument("--faults", default=",".join(FAULTS))
    ap.add_argument("--models", choices=("synthetic", "shipped"), default="synthetic")
    ap.add_argument("--deadline-ms", type=float, default=None, help="default: the node's frame_deadline_ms (100), "
                    "400 with --models shipped")
    ap.add_argument("--hedge-ms", type=float, default=None, help="default: the node's hedge_after_ms (40), 300 with "
                    "--models shipped")
    ap.add_argument("--replica-hedge-ms", type=float, default=20.0, help="node default replica_hedge_ms")
    ap.add_argument("--replica-rows", default="none", help=f"'all' or a subset of {','.join(REPLICA_ROWS)}")
    args = ap.parse_args(argv)
    shipped = args.models == "shipped"
    args.deadline_ms = args.deadline_ms or (400.0 if shipped else 100.0)
    args.hedge_ms = args.hedge_ms or (300.0 if shipped else 40.0)
    faults = [f for f in args.faults.split(",") if f]  # --faults "" runs only the replica rows
    replica_rows = {"none": [], "all": list(REPLICA_ROWS)}.get(args.replica_rows, args.replica_rows.split(","))

    from robot_compress.runtime.engine import Engine, read_metadata
    from robot_compress.runtime.failover import FailoverConfig
    from robot_compress.tools.faultproxy import MisbehavingServer
    from robot_compress.tools.serve import EdgeServerProcess
    from robot_compress.tools.synthetic_models import make_model

    tmp = Path(tempfile.mkdtemp(prefix="failover_bench_"))
    if args.models == "shipped" and replica_rows:
        ap.error("replica rows run on the synthetic stand-in (30 Hz); drop --replica-rows with --models shipped")
    if args.models == "shipped":
        teacher, student = (REPO / "models" / name for name in SHIPPED)
        if not teacher.is_file() or not student.is_file():
            ap.error(f"--models shipped needs models/{SHIPPED[0]} and models/{SHIPPED[1]}")
        hw = tuple(read_metadata(teacher).input_size)
    else:
        hw = tuple(args.teacher_hw)
        teacher = make_model(tmp / "teacher.onnx", input_size=hw, seed=1, model_id="teacher_seg")
        student = make_model(tmp / "student.onnx", input_size=(hw[0] // 2, hw[1] // 2), seed=2,
                             model_id="student_seg")
    model_id, rate_hz = read_metadata(teacher).model_id, RATE_HZ[args.models]
    engine = Engine(student)
    # the node's default parameters unless overridden
    cfg = FailoverConfig(deadline_s=args.deadline_ms / 1000, hedge_after_s=args.hedge_ms / 1000,
                         failure_threshold=5, recovery_probes=3, probe_interval_s=0.2, probe_backoff=2.0,
                         probe_backoff_max_s=1.0, replica_hedge_s=args.replica_hedge_ms / 1000)
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    rows, replica_results = [], []
    with EdgeServerProcess([teacher], payloads=("jpeg",), log_path=tmp / "server.log") as server, \
            MisbehavingServer(model_id, hw, engine.meta.num_classes, kind="bad_class",
                              max_lifetime_s=3600) as garbage:
        warm_up(server, engine, frame, model_id=model_id)
        for fault in faults:
            rows.append(run_row(fault, engine, server, garbage.url, cfg, args.seconds, frame, model_id, rate_hz))
            print(f"  done: {fault}", file=sys.stderr, flush=True)
        for row in replica_rows:
            replica_results.append(run_replica_row(row, engine, server, cfg, args.seconds, frame))
            print(f"  done: {row}", file=sys.stderr, flush=True)
    if rows:
        print_fault_rows(rows, args, cfg, hw, engine, rate_hz, teacher)
    if replica_results:
        print_replica_rows(replica_results, cfg)


def print_fault_rows(rows, args, cfg, hw, engine, rate_hz, teacher) -> None:
    sh, sw = engine.meta.input_size
    models = (f"teacher {hw[0]}x{hw[1]}, student {sh}x{sw}" if args.models == "synthetic" else
              f"edge {Path(teacher).name} ({hw[0]}x{hw[1]}), local {engine.model_id} ({sh}x{sw})")
    print(f"\n{rate_hz:g} Hz, {args.seconds:.0f} s per row, fault from 1/3 to 2/3; deadline "
          f"{cfg.deadline_s * 1000:.1f} ms, hedge after {cfg.hedge_after_s * 1000:.0f} ms; {models}, JPEG payload\n")
    print_table(("fault", "in", "out", "edge", "local", "p50 ms", "p95 ms", "max ms", "switch ms", "recover s",
                 "on edge %", "transitions", "late"),
                [(r["fault"], r["in"], r["out"], r["edge"], r["local"], f"{r['p50']:.1f}", f"{r['p95']:.1f}",
                  f"{r['max']:.1f}", f"{r['switch']:.1f}", f"{r['recovery']:.2f}", f"{r['edge_pct']:.0f}",
                  r["transitions"], r["misses"]) for r in rows])


if __name__ == "__main__":
    main()
