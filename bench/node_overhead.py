"""perception_node overhead: bare Engine time vs publish->result latency through the node, side by side
with a no-op echo node (same subscriptions/publications, no work) as the transport floor. Not a test.

    .venv/bin/python bench/node_overhead.py [--frames 100] [--model PATH]

Closed loop (publish one frame, wait for its result, publish the next) so no frame queues or drops.
Node, echo and bare Engine alternate blocks of 10 frames so machine load drifts hit all three alike.
overhead     = node p50 - engine p50   (what the node adds over calling Engine yourself)
beyond echo  = overhead - echo p50     (what the node adds over the cheapest rclpy round trip)
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test"))


def echo_main(argv: list[str]) -> int:
    """No-op node: for every Image, a zero mono8 Image and a JSON String with the same header."""
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from robot_compress.ros import qos

    input_topic, mask_topic, result_topic = argv[:3]
    rclpy.init(args=argv[3:])
    node = rclpy.create_node(f"echo_{uuid.uuid4().hex[:6]}")
    mask_pub = node.create_publisher(Image, mask_topic, qos.output_qos())
    result_pub = node.create_publisher(String, result_topic, qos.output_qos())

    def on_image(msg):
        out = Image(header=msg.header, height=msg.height, width=msg.width, encoding="mono8", step=msg.width)
        out.data = bytes(msg.height * msg.width)
        mask_pub.publish(out)
        stamp = {"sec": msg.header.stamp.sec, "nanosec": msg.header.stamp.nanosec}
        result_pub.publish(String(data=json.dumps({"stamp": stamp, "frame_id": msg.header.frame_id})))

    node.create_subscription(Image, input_topic, on_image, qos.sensor_qos(10, "reliable"))
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _stop(proc, timeout: float = 20.0) -> int | str:
    """Exit code after SIGINT; a process that ignores it is killed and reported, and the measurements made
    before the stop are kept (a slow exit is not a latency)."""
    try:
        return proc.stop(timeout)
    except AssertionError:
        proc.kill()
        return f"no exit within {timeout:g} s of SIGINT (killed)"


def _pct(values) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 95))


def engine_times(engine, frames) -> list[float]:
    out = []
    for rgb in frames:
        t0 = time.perf_counter()
        engine.infer(rgb)
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def round_trips(peer, node, frames, first_index, timeout=30.0) -> list[float]:
    """Publish each frame, wait for its result on the peer; latency in ms per frame."""
    from node_harness import make_header

    from robot_compress.ros.image_msgs import rgb_to_image

    out = []
    for i, rgb in enumerate(frames):
        header = make_header(first_index + i)
        key = (header.stamp.sec, header.stamp.nanosec, header.frame_id)
        msg = rgb_to_image(rgb, header)
        t0 = time.perf_counter()
        peer.publish(msg)
        peer.wait_until(lambda k=key: k in peer.result_times, timeout, f"result {key}", node)
        out.append((peer.result_times[key] - t0) * 1000.0)
    return out


def node_rss_mb(pid: int) -> dict:
    """Peak (VmHWM) and current (VmRSS) resident memory of the node process, MB (rclpy re-execs in place)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0]) / 1024.0
    return {"peak": fields.get("VmHWM", float("nan")), "now": fields.get("VmRSS", float("nan"))}


def open_loop(peer, node, frames, rate_hz, first_index, drain_s=5.0) -> dict:
    """Publish at `rate_hz` without waiting for results; count results (a missing one is a drop)."""
    from node_harness import make_header

    from robot_compress.ros.image_msgs import rgb_to_image

    keys, t0 = [], time.perf_counter()
    for i, rgb in enumerate(frames):
        time.sleep(max(0.0, t0 + i / rate_hz - time.perf_counter()))
        header = make_header(first_index + i)
        keys.append((header.stamp.sec, header.stamp.nanosec, header.frame_id))
        peer.publish(rgb_to_image(rgb, header))
    try:
        peer.wait_until(lambda: all(k in peer.result_times for k in keys), drain_s, "open-loop results", node)
    except AssertionError:
        pass  # drops are what this phase counts
    got = [peer.result_times[k] for k in keys if k in peer.result_times]
    span = (max(got) - t0) if got else float("nan")
    return {"rate_hz": rate_hz, "published": len(keys), "received": len(got), "fps": len(got) / span}


def measure(size_hw, n_frames, model, threads, tmp, rate_hz=30.0) -> dict:
    from node_harness import NodeProcess, Peer, synthetic_frame, write_params_file

    from robot_compress.runtime.engine import Engine

    h, w = size_hw
    frames = [synthetic_frame(i, h, w) for i in range(n_frames)]
    uid = uuid.uuid4().hex[:8]
    topics = {"input_topic": f"/bench_{uid}/image", "result_topic": f"/bench_{uid}/result",
              "mask_topic": f"/bench_{uid}/mask"}
    params = write_params_file(tmp / f"bench_{uid}.yaml", model_path=str(model), threads=threads,
                               qos_reliability="reliable", qos_depth=10, **topics)
    node = NodeProcess(params, log_dir=tmp)
    echo_topics = {k: v.replace("/bench_", "/echo_") for k, v in topics.items()}
    echo = NodeProcess(command=[sys.executable, str(Path(__file__).resolve()), "echo", echo_topics["input_topic"],
                                echo_topics["mask_topic"], echo_topics["result_topic"]], log_dir=tmp)
    peer = Peer(**topics, name=f"bench_peer_{uid}")
    echo_peer = Peer(**echo_topics, name=f"bench_echo_peer_{uid}")
    try:
        peer.wait_for_node(node, need_mask=True)
        echo_peer.wait_for_node(echo, need_mask=True)
        round_trips(peer, node, frames[:10], 10_000)  # warm-up: discovery, SHM segments, caches
        round_trips(echo_peer, echo, frames[:10], 10_000)
        engine = Engine(model, threads=threads)
        engine_times(engine, frames[:10])
        node_ms, echo_ms, engine_ms = [], [], []
        block = 10
        for start in range(0, n_frames, block):  # interleaved so load changes hit all three alike
            chunk = frames[start:start + block]
            node_ms += round_trips(peer, node, chunk, start)
            echo_ms += round_trips(echo_peer, echo, chunk, start)
            engine_ms += engine_times(engine, chunk)
        with peer.lock:  # receipt-in-callback -> result ready, as the node itself measured it
            inside_ms = [r["latency_ms"] for r in peer.results if r["stamp"]["sec"] < 1000 + 10_000]
        sustained = open_loop(peer, node, frames, rate_hz, 20_000) if rate_hz > 0 else None
        rss = node_rss_mb(node.proc.pid)
        stop_codes = {"node": _stop(node), "echo": _stop(echo)}
    finally:
        peer.close()
        echo_peer.close()
        node.close()
        echo.close()
    return {"engine": _pct(engine_ms), "node": _pct(node_ms), "echo": _pct(echo_ms), "inside": _pct(inside_ms),
            "sustained": sustained, "node_rss_mb": rss, "stop": stop_codes}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "echo":
        return echo_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", type=Path, help="segmentation ONNX model (default: synthetic 1x1-conv at 360x480)")
    ap.add_argument("--rate", type=float, default=30.0, help="open-loop phase: publish rate in Hz (0 = skip)")
    ap.add_argument("--json", type=Path, help="also write the measurements as JSON here")
    args = ap.parse_args(argv)

    from robot_compress.tools.ros_env import apply_localhost_dds
    from robot_compress.tools.synthetic_models import make_model

    apply_localhost_dds()
    with tempfile.TemporaryDirectory(prefix="node_overhead_") as tmpdir:
        tmp = Path(tmpdir)
        model = args.model or make_model(tmp / "bench_seg.onnx", task="segmentation", input_size=(360, 480))
        rows, raw = [], {}
        for size in ((480, 640), (360, 480)):
            r = measure(size, args.frames, model, args.threads, tmp, args.rate)
            raw[f"{size[1]}x{size[0]}"] = r
            overhead = r["node"][0] - r["engine"][0]
            rows.append((f"{size[1]}x{size[0]}", *r["engine"], *r["inside"], *r["node"], *r["echo"], overhead,
                         overhead - r["echo"][0]))
    print(f"\nperception_node overhead, model {model.name if args.model else 'synthetic 360x480'}, "
          f"{args.frames} frames, threads={args.threads}, closed loop (ms)\n")
    head = ("frame", "engine p50", "engine p95", "in-node p50", "in-node p95", "node p50", "node p95", "echo p50",
            "echo p95", "overhead p50",
            "beyond echo")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join([row[0]] + [f"{v:.2f}" for v in row[1:]]) + " |")
    print("\nin-node = receipt in callback -> result ready (the result's latency_ms); node = publish -> result "
          "received\noverhead = node p50 - engine p50; beyond echo = overhead - echo p50 (goal: <= 2 ms)")
    for frame, r in raw.items():
        s, m = r["sustained"], r["node_rss_mb"]
        if s:
            print(f"{frame}: open loop at {s['rate_hz']:.0f} Hz: {s['received']}/{s['published']} results, "
                  f"{s['fps']:.1f} frames/s; node RSS peak {m['peak']:.0f} MB")
        for who, code in r["stop"].items():
            if code != 0:
                print(f"{frame}: {who} stop: {code}")
    if args.json:
        args.json.write_text(json.dumps({"model": str(model), "frames": args.frames, "threads": args.threads,
                                         "sizes": raw}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
