"""Edge transport and payload, measured side by side in one run on loopback (numbers for docs/EDGE.md).

Rows: this project's http.client KServe v2 client with raw uint8 / JPEG / float payloads, and tritonclient's
gRPC and HTTP clients (raw uint8), against the same Triton server and teacher. Also a bandwidth-capped link
(fault proxy) to show what payload size costs on a constrained link. Prints a table; asserts nothing.

    .venv/bin/python bench/edge_transport_bench.py [--teacher-hw 360 480] [--frames 200]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TRITONCLIENT_SNIPPET = r"""
import json, sys, time
import numpy as np
proto, url, model, h, w, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
if proto == "grpc":
    import tritonclient.grpc as tc
else:
    import tritonclient.http as tc
client = tc.InferenceServerClient(url)
img = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
times = []
for i in range(n + 10):
    t0 = time.perf_counter()
    inp = tc.InferInput("image", [h, w, 3], "UINT8")
    if proto == "grpc":
        inp.set_data_from_numpy(img)
    else:
        inp.set_data_from_numpy(img, binary_data=True)
    res = client.infer(model, [inp], outputs=[tc.InferRequestedOutput("mask")])
    mask = res.as_numpy("mask")
    assert mask.shape == (h, w)
    if i >= 10:
        times.append((time.perf_counter() - t0) * 1000)
print(json.dumps(times))
"""


def pct(values, q):
    return float(np.percentile(values, q)) if values else float("nan")


def bench_client(url, meta, payload, frame, n):
    from robot_compress.runtime.edge_client import EdgeClient

    client = EdgeClient(url, "teacher_seg", meta, payload=payload)
    for _ in range(10):
        client.infer(frame, timeout_s=10.0)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.infer(frame, timeout_s=10.0)
        times.append((time.perf_counter() - t0) * 1000)
    client.close()
    return times


def payload_bytes(meta, payload, frame, hw):
    import cv2

    from robot_compress.runtime.imaging import encode_compressed

    small = cv2.resize(frame, hw[::-1], interpolation=cv2.INTER_AREA)
    return {"raw": small.nbytes, "jpeg": len(encode_compressed(small, "jpeg", 90)), "float": 4 * small.size}[payload]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher-hw", type=int, nargs=2, default=[360, 480])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--capped-bytes-per-s", type=float, default=12.5e6, help="constrained link (100 Mbit/s)")
    args = ap.parse_args(argv)

    from robot_compress.runtime.engine import read_metadata
    from robot_compress.tools.faultproxy import FaultProxy
    from robot_compress.tools.serve import EdgeServerProcess, edge_python
    from robot_compress.tools.synthetic_models import make_model

    hw = tuple(args.teacher_hw)
    tmp = Path(tempfile.mkdtemp(prefix="edge_bench_"))
    teacher = make_model(tmp / "teacher.onnx", input_size=hw, model_id="teacher_seg")
    meta = read_metadata(teacher)
    # a camera-sized frame from a realistic-ish scene (gradients + noise) so JPEG sizes mean something
    yy, xx = np.mgrid[0:480, 0:640]
    frame = np.stack([xx * 255 // 639, yy * 255 // 479, (xx + yy) % 256], 2).astype(np.uint8)
    frame = (frame + np.random.default_rng(1).integers(0, 24, frame.shape)).clip(0, 255).astype(np.uint8)

    t0 = time.monotonic()
    server = EdgeServerProcess([teacher], payloads=("raw", "jpeg", "float"), log_path=tmp / "server.log").start()
    start_s = time.monotonic() - t0
    rows = []
    try:
        for payload in ("raw", "jpeg", "float"):
            times = bench_client(server.url, meta, payload, frame, args.frames)
            rows.append((f"http.client KServe v2, {payload}", payload_bytes(meta, payload, frame, hw), times))
        small = frame[: hw[0], : hw[1]]
        for proto, port in (("grpc", server.grpc_port), ("http", server.http_port)):
            out = subprocess.run([str(edge_python()), "-c", TRITONCLIENT_SNIPPET, proto, f"127.0.0.1:{port}",
                                  "teacher_seg", str(hw[0]), str(hw[1]), str(args.frames)],
                                 capture_output=True, text=True, timeout=600)
            if out.returncode != 0:
                print(f"tritonclient {proto} failed: {out.stderr[-500:]}", file=sys.stderr)
                continue
            rows.append((f"tritonclient.{proto}, raw", small.nbytes, json.loads(out.stdout.strip().splitlines()[-1])))
        with FaultProxy(server.http_port) as proxy:
            proxy.bandwidth(args.capped_bytes_per_s)
            for payload in ("raw", "jpeg", "float"):
                times = bench_client(proxy.url, meta, payload, frame, max(20, args.frames // 4))
                mbit = args.capped_bytes_per_s * 8 / 1e6
                rows.append((f"capped {mbit:.0f} Mbit/s, {payload}", payload_bytes(meta, payload, frame, hw), times))
    finally:
        server.stop()

    print(f"\nTriton (PyTriton) start -> all models ready: {start_s:.1f} s; teacher input {hw[0]}x{hw[1]}, "
          f"camera frame 480x640, {args.frames} requests per row\n")
    print(f"| {'client / payload':<36} | {'bytes/frame':>11} | {'p50 ms':>7} | {'p95 ms':>7} | {'max ms':>7} |")
    print(f"|{'-' * 38}|{'-' * 13}|{'-' * 9}|{'-' * 9}|{'-' * 9}|")
    for name, nbytes, times in rows:
        print(f"| {name:<36} | {nbytes:>11,} | {pct(times, 50):7.1f} | {pct(times, 95):7.1f} | {max(times):7.1f} |")


if __name__ == "__main__":
    main()
