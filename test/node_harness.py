"""Reusable helpers for tests that drive perception_node as launch would (replay, failover, benchmarks).

- `write_params_file` writes a `/**: ros__parameters:` YAML like config/perception.yaml.
- `NodeProcess` starts `python -m robot_compress.ros.perception_node --ros-args --params-file F -p k:=v`
  in a subprocess with DDS confined to localhost (same ROS_DOMAIN_ID as this process), and collects
  its output and exit code.
- `Peer` is an in-process rclpy node on a private context, spun in a background thread: it publishes
  frames and records results, masks, overlays and diagnostics. Readiness is judged by publisher and
  subscription counts, never by sleeping.
- `NodeParams` (`ros2 param get/set`) and `Lifecycle` (`ros2 lifecycle get/set`) talk to a running node
  through the Peer's node, over the standard rcl_interfaces / lifecycle_msgs services.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import yaml

from robot_compress.tools.ros_env import localhost_dds_env

NODE_MODULE = "robot_compress.ros.perception_node"
LIFECYCLE_MODULE = "robot_compress.ros.lifecycle_node"


def write_params_file(path, node_name: str = "/**", **params) -> Path:
    path = Path(path)
    path.write_text(yaml.safe_dump({node_name: {"ros__parameters": params}}, sort_keys=False))
    return path


def _param_arg(key, value) -> str:
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"{key}:={value}"


class NodeProcess:
    """perception_node (or any module with main) in a subprocess, started the way launch starts it."""

    def __init__(self, params_file=None, params: dict | None = None, module: str = NODE_MODULE,
                 log_dir=None, env: dict | None = None, command: list[str] | None = None,
                 node_name: str | None = None):
        ros_args = ["-r", f"__node:={node_name}"] if node_name else []
        if params_file is not None:
            ros_args += ["--params-file", str(params_file)]
        for key, value in (params or {}).items():
            ros_args += ["-p", _param_arg(key, value)]
        base = command or [sys.executable, "-u", "-m", module]
        self.argv = base + (["--ros-args", *ros_args] if ros_args else [])
        self.log_path = Path(log_dir or "/tmp") / f"node_{os.getpid()}_{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "w+b")
        self.proc = subprocess.Popen(self.argv, env=env or localhost_dds_env(), stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    @property
    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_bytes().decode(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float = 30.0) -> int:
        """Exit code; raises AssertionError with the node's output if it does not exit in time."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"node did not exit within {timeout} s; output:\n{self.output}") from None

    def signal(self, sig=signal.SIGINT) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> int:
        if self.alive():
            self.signal(signal.SIGINT)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)

    def close(self) -> None:
        self.kill()
        self._log.close()
        self.log_path.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def stamp_key(header) -> tuple[int, int, str]:
    return (int(header.stamp.sec), int(header.stamp.nanosec), header.frame_id)


class Peer:
    """Test-side node: publishes camera frames, records everything perception_node publishes."""

    def __init__(self, input_topic="/camera/image_raw", compressed=False, result_topic="perception/result",
                 mask_topic="perception/mask", overlay_topic="perception/overlay", depth=200,
                 name="perception_test_peer"):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image
        from std_msgs.msg import String

        self._rclpy = rclpy
        self.input_topic = input_topic
        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name, context=self.context)
        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE)
        self.publisher = self.node.create_publisher(CompressedImage if compressed else Image, input_topic, reliable)
        self.lock = threading.Lock()
        self.results: list[dict] = []
        self.masks: dict[tuple, object] = {}
        self.overlays: dict[tuple, object] = {}
        self.diagnostics: list[dict[str, str]] = []
        self.result_times: dict[tuple, float] = {}
        self.subs = [
            self.node.create_subscription(String, result_topic, self._on_result, reliable),
            self.node.create_subscription(Image, mask_topic, self._on_mask, reliable),
            self.node.create_subscription(Image, overlay_topic, self._on_overlay, reliable),
            self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, reliable),
        ]
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spin = threading.Thread(target=self._spin_loop, daemon=True)
        self._spin.start()

    def _spin_loop(self):
        try:
            while self.context.ok():
                self.executor.spin_once(timeout_sec=0.05)
        except Exception:  # context shut down under us at close()
            pass

    def _on_result(self, msg):
        now = time.perf_counter()
        data = json.loads(msg.data)
        with self.lock:
            self.results.append(data)
            self.result_times[(data["stamp"]["sec"], data["stamp"]["nanosec"], data["frame_id"])] = now

    def _on_mask(self, msg):
        with self.lock:
            self.masks[stamp_key(msg.header)] = msg

    def _on_overlay(self, msg):
        with self.lock:
            self.overlays[stamp_key(msg.header)] = msg

    def _on_diag(self, msg):
        from robot_compress.ros.diagnostics import values_dict

        values = values_dict(msg)
        # /diagnostics is shared by every node on the domain: keep only the node that reads our topic.
        if values.get("input_topic", "").lstrip("/") != self.input_topic.lstrip("/"):
            return
        with self.lock:
            self.diagnostics.append(values)

    # --- waiting (counts, never fixed sleeps) ---------------------------------------------------------
    def wait_until(self, predicate, timeout: float, what: str, node: NodeProcess | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if node is not None and not node.alive():
                raise AssertionError(f"node exited (rc={node.proc.returncode}) while waiting for {what}:\n"
                                     f"{node.output}")
            time.sleep(0.02)
        detail = f"\nnode output:\n{node.output}" if node is not None else ""
        raise AssertionError(f"timed out after {timeout} s waiting for {what}{detail}")

    def wait_for_node(self, node: NodeProcess | None = None, timeout: float = 60.0, need_mask=False) -> None:
        """The node subscribes our frames and publishes results (and masks when asked)."""
        def ready():
            ok = self.publisher.get_subscription_count() >= 1 and self.subs[0].get_publisher_count() >= 1
            return ok and (not need_mask or self.subs[1].get_publisher_count() >= 1)
        self.wait_until(ready, timeout, "perception_node to connect", node)

    def latest_diagnostics(self) -> dict[str, str]:
        with self.lock:
            return dict(self.diagnostics[-1]) if self.diagnostics else {}

    def wait_for_settled(self, frames_in: int, node: NodeProcess | None = None, timeout: float = 60.0) -> dict:
        """Wait until diagnostics account for every sent frame and all results arrived; returns counters."""
        def settled():
            d = self.latest_diagnostics()
            if not d or int(d["frames_in"]) < frames_in:
                return False
            done = sum(int(d[k]) for k in ("frames_out", "dropped", "bad_frames", "errors"))
            with self.lock:
                have = len(self.results)
            return done == int(d["frames_in"]) and have >= int(d["frames_out"])
        self.wait_until(settled, timeout, f"{frames_in} frames to be accounted for in /diagnostics", node)
        return {k: int(v) for k, v in self.latest_diagnostics().items() if v.isdigit()}

    # --- publishing ------------------------------------------------------------------------------------
    def publish(self, msg) -> None:
        self.publisher.publish(msg)

    def close(self) -> None:
        try:
            self.node.destroy_node()
        finally:
            self._rclpy.try_shutdown(context=self.context)
            self._spin.join(5)


def make_header(index: int, frame_id: str | None = None):
    from std_msgs.msg import Header

    header = Header(frame_id=frame_id if frame_id is not None else f"camera_{index}")
    header.stamp.sec = 1000 + index
    header.stamp.nanosec = (index * 7919) % 1_000_000_000
    return header


def synthetic_frame(index: int, height: int = 480, width: int = 640) -> np.ndarray:
    """A deterministic, varied RGB frame (gradients + per-index noise) so masks differ frame to frame."""
    rng = np.random.default_rng(index)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(xx * 255 // max(width - 1, 1)), (yy * 255 // max(height - 1, 1)),
                     ((xx + yy + 17 * index) % 256)], axis=2)
    noise = rng.integers(0, 64, (height, width, 3))
    return ((base + noise) % 256).astype(np.uint8)


class NodeParams:
    """`ros2 param get/set` against a running node, from the Peer's node."""

    def __init__(self, peer: Peer, node_name: str, node: NodeProcess | None = None):
        from rclpy.parameter_client import AsyncParameterClient

        self.peer, self.node = peer, node
        self.client = AsyncParameterClient(peer.node, node_name)
        peer.wait_until(self.client.services_are_ready, 60, f"{node_name}'s parameter services", node)

    def _reply(self, future, timeout: float = 60.0):
        self.peer.wait_until(future.done, timeout, "a parameter service reply", self.node)
        return future.result()

    def set(self, **values) -> list:
        """One SetParametersResult (successful, reason) per value, in order; each set on its own."""
        from rclpy.parameter import Parameter

        return self._reply(self.client.set_parameters([Parameter(k, value=v) for k, v in values.items()])).results

    def get(self, *names) -> dict:
        from rclpy.parameter import parameter_value_to_python

        values = self._reply(self.client.get_parameters(list(names))).values
        return {n: parameter_value_to_python(v) for n, v in zip(names, values, strict=True)}

    def types(self, *names) -> dict:
        values = self._reply(self.client.get_parameters(list(names))).values
        return {n: v.type for n, v in zip(names, values, strict=True)}


class Lifecycle:
    """`ros2 lifecycle get/set` against a managed node, over the lifecycle_msgs services."""

    def __init__(self, peer: Peer, node_name: str, node: NodeProcess | None = None):
        from lifecycle_msgs.srv import ChangeState, GetState

        self.peer, self.node = peer, node
        self._change = peer.node.create_client(ChangeState, f"/{node_name}/change_state")
        self._get = peer.node.create_client(GetState, f"/{node_name}/get_state")
        peer.wait_until(lambda: self._change.service_is_ready() and self._get.service_is_ready(), 60,
                        f"{node_name}'s lifecycle services", node)

    def _reply(self, future, timeout: float = 60.0):
        self.peer.wait_until(future.done, timeout, "a lifecycle service reply", self.node)
        return future.result()

    @property
    def state(self) -> str:
        from lifecycle_msgs.srv import GetState

        return self._reply(self._get.call_async(GetState.Request())).current_state.label

    def transition(self, transition_id: int) -> bool:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        request = ChangeState.Request(transition=Transition(id=transition_id))
        return self._reply(self._change.call_async(request)).success
