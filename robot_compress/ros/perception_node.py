"""perception_node: camera frames in, segmentation masks / classification results out.

The camera callback only timestamps the frame and drops it into a latest-frame-wins slot; one worker
thread decodes, runs the FrameProcessor (local Engine today, edge/failover later) and publishes. A frame
replaced in the slot before the worker took it counts as dropped. Every setting is a declared parameter
(PARAMETERS below), validated at start-up.

Outputs per processed frame, all carrying the input header (stamp + frame_id) unchanged:
  result_topic   std_msgs/String, JSON schema robot_compress/result/1 (see runtime/results.py)
  mask_topic     sensor_msgs/Image mono8, pixel = class id (segmentation models only)
  overlay_topic  sensor_msgs/Image rgb8 blend of frame and mask (segmentation, publish_overlay=true)
A frame that cannot be decoded (unsupported encoding, truncated data, corrupt JPEG) gets no result:
it is logged (throttled) and counted as bad_frames on /diagnostics.
"""
from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.exceptions import InvalidParameterTypeException, ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from robot_compress.ros import diagnostics, image_msgs, qos
from robot_compress.runtime import postprocess
from robot_compress.runtime.engine import Engine, ModelLoadError
from robot_compress.runtime.latest_slot import LatestSlot
from robot_compress.runtime.processor import FrameProcessor, LocalProcessor
from robot_compress.runtime.stats import FrameStats
from robot_compress.tools.ros_env import PACKAGE_ROOT

NODE_NAME = "perception_node"
PACKAGE = "robot_compress"
MODES = ("local", "edge", "auto")
LOG_THROTTLE_S = 5.0


class ConfigError(ValueError):
    """A parameter value the node cannot run with (the message names the parameter)."""


@dataclass(frozen=True)
class Param:
    name: str
    default: str | bool | int | float
    description: str
    check: Callable[[object], str | None] | None = None  # returns a complaint, or None when fine

    @property
    def ros_type(self) -> int:
        return _ROS_TYPES[type(self.default)]


_ROS_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
              float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}


def _one_of(*allowed):
    return lambda v: None if v in allowed else f"must be one of {', '.join(allowed)}"


def _at_least(low):
    return lambda v: None if v >= low else f"must be >= {low}"


def _positive(v):
    return None if v > 0 else "must be > 0"


def _topic(v):
    return None if v.strip() else "must be a non-empty topic name"


# One table drives declare_parameter, start-up validation, config/perception.yaml and its test.
PARAMETERS: tuple[Param, ...] = (
    Param("model_path", "camvid_lraspp_student.onnx",
          "ONNX model with robot_compress metadata. Absolute path, or a file name looked up in "
          "share/robot_compress/models, then the source tree's models/.", lambda v: None if v else "must be set"),
    Param("input_topic", "/camera/image_raw", "Camera topic (sensor_msgs/Image, or CompressedImage when "
          "compressed_input is true).", _topic),
    Param("compressed_input", False, "true: subscribe sensor_msgs/CompressedImage (jpeg|png); false: Image "
          "(rgb8|bgr8|rgba8|bgra8|mono8)."),
    Param("result_topic", "perception/result", "std_msgs/String JSON result, one per processed frame.", _topic),
    Param("mask_topic", "perception/mask", "sensor_msgs/Image mono8 class-id mask (segmentation).", _topic),
    Param("overlay_topic", "perception/overlay", "sensor_msgs/Image rgb8 mask overlay (segmentation).", _topic),
    Param("publish_overlay", False, "true|false: publish the colourised overlay (costs ~1 MB per frame)."),
    Param("threads", 1, "onnxruntime intra-op threads, integer >= 1.", _at_least(1)),
    Param("qos_depth", 5, "Camera subscription history depth, integer >= 1.", _at_least(1)),
    Param("qos_reliability", "best_effort", "Camera subscription reliability: best_effort|reliable.",
          _one_of(*qos.RELIABILITY)),
    Param("top_k", 5, "Classification labels per result, integer >= 1.", _at_least(1)),
    Param("mode", "local", "Where frames are processed: local|edge|auto. local: on-robot model only, no "
          "network; edge: edge server only (a failed frame is an error); auto: edge with hedged local "
          "failover (docs/EDGE.md).", _one_of(*MODES)),
    Param("frame_deadline_ms", 100.0, "Per-frame deadline after receipt in ms (> 0); misses are counted "
          "and drive failover in auto mode.", _positive),
    Param("diagnostics_period_s", 1.0, "Period of /diagnostics reports in seconds (> 0).", _positive),
    # Edge offload (mode edge|auto; see robot_compress/runtime/failover.py for the state table).
    Param("edge_url", "http://127.0.0.1:8000", "Edge server base URL, KServe v2 over HTTP: http://HOST:PORT.",
          lambda v: None if v.startswith("http://") else "must look like http://HOST:PORT"),
    Param("edge_model", "", "Model name on the edge server; empty: the local model's model_id."),
    Param("edge_payload", "jpeg", "Frame encoding sent to the edge: raw|jpeg|float, at the teacher's input "
          "size (jpeg: 16x fewer bytes, fastest on a constrained link, docs/EDGE.md).",
          _one_of("raw", "jpeg", "float")),
    Param("hedge_after_ms", 40.0, "auto: start local inference if the edge has not answered after this many "
          "ms (0..frame_deadline_ms).", _at_least(0.0)),
    Param("failure_threshold", 5, "auto: consecutive edge failures that switch to local, integer >= 1.",
          _at_least(1)),
    Param("recovery_probes", 3, "auto: consecutive healthy probes needed to return to the edge, integer >= 1.",
          _at_least(1)),
    Param("probe_interval_ms", 200.0, "auto: first probe delay and spacing of healthy probes in ms (> 0).",
          _positive),
    Param("probe_backoff", 2.0, "auto: factor (>= 1) by which the probe delay grows after a failed probe.",
          _at_least(1.0)),
    Param("probe_backoff_max_ms", 1000.0, "auto: cap of the probe delay in ms (>= probe_interval_ms); bounds "
          "the time to notice a restored link.", _positive),
    Param("edge_max_in_flight", 4, "Edge requests outstanding at once, integer >= 1; beyond it a frame is "
          "answered locally.", _at_least(1)),
)
PARAMETER_NAMES = tuple(p.name for p in PARAMETERS)


def model_search_dirs() -> list[Path]:
    dirs = []
    try:
        from ament_index_python.packages import get_package_share_directory

        dirs.append(Path(get_package_share_directory(PACKAGE)) / "models")
    except Exception:  # not installed through ament (source checkout / pip -e)
        pass
    dirs.append(PACKAGE_ROOT / "models")
    return dirs


def resolve_model_path(value: str) -> Path:
    """Absolute paths stay as given (Engine reports a missing file); names are looked up in models/."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    candidates = [d / path for d in model_search_dirs()]
    for cand in candidates:
        if cand.is_file():
            return cand
    raise ConfigError(
        f"model_path {value!r} not found (looked in {', '.join(str(c) for c in candidates)}); "
        f"give an absolute path or put the file in models/"
    )


def make_processor(mode: str, engine: Engine, params: dict, log=None) -> FrameProcessor:
    """The one place that decides how frames are processed (edge offload / failover plug in here)."""
    if mode == "local":
        return LocalProcessor(engine)
    from robot_compress.runtime.offload import offload_from_params

    try:
        return offload_from_params(mode, engine, params, log=log)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


class PerceptionNode(Node):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self.params = self._declare_and_validate()
        p = self.params
        model_path = resolve_model_path(p["model_path"])
        self.engine = Engine(model_path, threads=p["threads"], top_k=p["top_k"])
        # Warm the lazy paths (cv2 import, resize, post-processing) so the first camera frame is not ~80 ms late.
        h, w = self.engine.meta.input_size
        self.engine.infer(np.zeros((h + 1, w + 1, 3), np.uint8))
        self.processor = make_processor(p["mode"], self.engine, p, log=self.get_logger().warning)
        self.deadline_s = p["frame_deadline_ms"] / 1000.0
        self.stats = FrameStats()
        self.slot = LatestSlot()
        self._last_diag: dict | None = None
        self._info = {"model_id": self.engine.model_id, "task": self.engine.task, "mode": p["mode"],
                      "model_path": str(model_path), "input_topic": p["input_topic"]}

        out_qos = qos.output_qos()
        self.result_pub = self.create_publisher(String, p["result_topic"], out_qos)
        self.mask_pub = self.create_publisher(Image, p["mask_topic"], out_qos)
        self.overlay_pub = self.create_publisher(Image, p["overlay_topic"], out_qos) if p["publish_overlay"] else None
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", out_qos)
        msg_type = CompressedImage if p["compressed_input"] else Image
        self.subscription = self.create_subscription(
            msg_type, p["input_topic"], self._on_frame, qos.sensor_qos(p["qos_depth"], p["qos_reliability"]))
        self.diag_timer = self.create_timer(p["diagnostics_period_s"], self._publish_diagnostics)

        self._worker = threading.Thread(target=self._work, name="perception_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"ready: model {self.engine.model_id} ({self.engine.task}, {model_path}), mode {p['mode']}, "
            f"input {p['input_topic']} ({msg_type.__name__}, {p['qos_reliability']} depth {p['qos_depth']})")

    # --- parameters -------------------------------------------------------------------------------
    def _declare_and_validate(self) -> dict:
        values, problems = {}, []
        for spec in PARAMETERS:
            desc = ParameterDescriptor(description=spec.description, type=spec.ros_type)
            try:
                values[spec.name] = self.declare_parameter(spec.name, spec.default, desc).value
            except (InvalidParameterTypeException, ParameterException) as exc:
                problems.append(f"parameter {spec.name!r} must be of type {type(spec.default).__name__}: {exc}")
                continue
            complaint = spec.check(values[spec.name]) if spec.check else None
            if complaint:
                problems.append(f"parameter {spec.name!r} {complaint}, got {values[spec.name]!r}")
        if problems:
            raise ConfigError("; ".join(problems))
        return values

    # --- camera callback: never blocks on inference -----------------------------------------------
    def _on_frame(self, msg) -> None:
        received = time.monotonic()
        self.stats.count("frames_in")
        if self.slot.put((msg, received)):
            self.stats.count("dropped")

    # --- worker thread ------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self.slot.closed:
            ok, item = self.slot.take(timeout=0.5)
            if ok:
                try:
                    self._handle(*item)
                except Exception as exc:  # publishing during shutdown, or a bug: count it, keep serving
                    if self.slot.closed:
                        return
                    self.stats.count("errors")
                    self.get_logger().error(f"frame processing failed: {exc!r}", throttle_duration_sec=LOG_THROTTLE_S)

    def _handle(self, msg, received: float) -> None:
        header = msg.header
        try:
            rgb = image_msgs.msg_to_rgb(msg)
        except image_msgs.ImageDecodeError as exc:
            self.stats.count("bad_frames")
            self.get_logger().error(
                f"bad frame {header.frame_id!r} @ {header.stamp.sec}.{header.stamp.nanosec:09d}: {exc}",
                throttle_duration_sec=LOG_THROTTLE_S)
            return
        result = self.processor.process(rgb, received, received + self.deadline_s)
        if result.mask is not None:
            self.mask_pub.publish(image_msgs.mask_to_image(result.mask, header))
            if self.overlay_pub is not None:
                blend = postprocess.overlay(rgb, result.mask, self.engine.meta.num_classes)
                self.overlay_pub.publish(image_msgs.rgb_to_image(blend, header))
        payload = result.to_dict(header.stamp.sec, header.stamp.nanosec, header.frame_id)
        self.result_pub.publish(String(data=json.dumps(payload)))
        self.stats.result(result.latency_ms)

    # --- diagnostics ----------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        snap = self.stats.snapshot()
        level, message = diagnostics.status_level(snap, self._last_diag)
        if not self._worker.is_alive():
            level, message = diagnostics.DiagnosticStatus.ERROR, "worker thread stopped"
        self._last_diag = snap
        pairs = diagnostics.key_values(self._info, snap, self.processor.status())
        self.diag_pub.publish(diagnostics.make_diagnostic_array(
            self.get_clock().now().to_msg(), f"{self.get_name()}: perception", self.engine.model_id,
            level, message, pairs))

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker (it finishes the frame in hand) and release the processor."""
        self.slot.close()
        self._worker.join(timeout)
        self.processor.close()


class _Terminated(Exception):
    """SIGTERM arrived (launch/systemd stop): leave spin and shut down like on Ctrl-C."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def _ignore_stop_signals() -> None:
    """Cleanup is bounded (worker join <= 5 s); a second Ctrl-C/SIGTERM must not abort it half-way."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def main(args=None) -> int:
    # Installed before rclpy.init so rclpy's own handler chains to it after waking the executor.
    signal.signal(signal.SIGTERM, _on_sigterm)
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = PerceptionNode()
        if rclpy.ok():  # a Ctrl-C during start-up has already shut the context down: nothing to spin
            rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException, _Terminated):
        pass
    except (ConfigError, ModelLoadError) as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {exc}")
        code = 2
    except RuntimeError:
        # The same Ctrl-C landing between that check and spin's executor set-up: rclpy raises RCLError
        # "context is not valid". A normal stop, not a crash.
        if rclpy.ok():
            raise
    finally:
        _ignore_stop_signals()
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
