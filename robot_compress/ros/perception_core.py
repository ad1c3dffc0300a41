"""The perception node's logic, shared by the plain node and the managed (lifecycle) node.

`PerceptionCore` does everything a perception node does; the two node classes only decide *when*:
  configure   read the parameters, load the model beside nothing, build the frame processor, check the edge,
              create the publishers
  activate    subscribe the camera, start the worker thread and the /diagnostics timer
  deactivate  unsubscribe, let the worker finish the frame in hand (and a pending one), stop the timer;
              the model, the processor (breaker state) and the frame counters stay
  cleanup     release the processor, the model and the publishers
The plain `PerceptionNode` configures and activates in its constructor; `LifecyclePerceptionNode` follows the
lifecycle_msgs transitions (ros2 lifecycle set / a lifecycle manager, as navigation stacks bring nodes up).

The camera callback only timestamps the frame and drops it into a latest-frame-wins slot; one worker thread
decodes, runs the FrameProcessor (local Engine, or edge replicas with local failover) and publishes. Outputs
per processed frame carry the input header unchanged: a JSON result (robot_compress/result/1, plus
`edge_replica` for an edge answer; `detections` in frame pixels for a detector), a mono8 class-id mask
(segmentation only) and an optional rgb8 overlay (the colourised mask, or the boxes with label and score).

Live reconfiguration: every set is validated by the one PARAMETERS table (ros/parameters.py) and applied
before it is accepted, so `ros2 param set` reports a bad value or a model that cannot load as a failure with
its reason. A new model or processor is built beside the running one and swapped in between frames (the swap
waits for the frame in hand), so no frame is lost or answered twice.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, ParameterException
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.task import Future
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from robot_compress.ros import diagnostics, image_msgs, qos
from robot_compress.ros.parameters import (
    ENGINE_PARAMS,
    NODE_NAME,
    PARAMETERS,
    PROCESSOR_PARAMS,
    SPECS,
    ConfigError,
    edge_settings,
    resolve_model_path,
    validate,
)
from robot_compress.runtime import detection, postprocess
from robot_compress.runtime.edge_client import EdgeClient
from robot_compress.runtime.engine import Engine, ModelLoadError
from robot_compress.runtime.latest_slot import LatestSlot
from robot_compress.runtime.offload import OffloadProcessor
from robot_compress.runtime.processor import FrameProcessor, LocalProcessor
from robot_compress.runtime.stats import FrameStats

LOG_THROTTLE_S = 5.0
EDGE_CHECK_TIMEOUT_S = 0.5
WORKER_JOIN_S = 5.0


def make_processor(engine: Engine, params: dict, log=None) -> FrameProcessor:
    """The one place that decides how frames are processed: mode local, or edge replicas (edge | auto)."""
    if params["mode"] == "local":
        return LocalProcessor(engine)
    try:
        edge = edge_settings(params)
        model = edge.model or engine.model_id
        clients = [EdgeClient(url, model, engine.meta, payload=edge.payload, top_k=engine.top_k) for url in edge.urls]
    except ValueError as exc:  # values the table let through but the runtime refuses (a bug): name it
        raise ConfigError(str(exc)) from None
    return OffloadProcessor(engine, clients, edge.failover, log=log)


def load_engine(params: dict) -> tuple[Engine, Path]:
    """Resolve model_path and load it, warmed up; ConfigError / ModelLoadError name the problem."""
    path = resolve_model_path(params["model_path"])
    engine = Engine(path, threads=params["threads"], top_k=params["top_k"])
    # Warm the lazy paths (cv2 import, resize, post-processing) so the first camera frame is not ~80 ms late.
    h, w = engine.meta.input_size
    engine.infer(np.zeros((h + 1, w + 1, 3), np.uint8))
    return engine, path


@dataclass(frozen=True)
class Pipeline:
    """What answers frames; replaced as a whole between frames."""

    engine: Engine
    processor: FrameProcessor
    model_path: Path


@dataclass(frozen=True)
class PublisherFactory:
    """create_publisher/destroy_publisher of the plain node, or the lifecycle node's managed ones."""

    create: Callable
    destroy: Callable


class PerceptionCore:
    def __init__(self, node: Node, publishers: PublisherFactory):
        self.node = node
        self._factory = publishers
        self.params = self._declare()
        self.stats = FrameStats()
        self.pipeline: Pipeline | None = None
        self._frame_lock = threading.Lock()  # the worker holds it per frame: swaps happen between frames
        self._pubs: dict[str, object] = {}
        self._subscription = None
        self._timer = None
        self._slot: LatestSlot | None = None
        self._worker: threading.Thread | None = None
        self._last_diag: dict | None = None
        node.add_pre_set_parameters_callback(self._coerce_incoming)
        node.add_on_set_parameters_callback(self._on_set_parameters)

    @property
    def log(self):
        return self.node.get_logger()

    # --- parameters -------------------------------------------------------------------------------
    def _declare(self) -> dict:
        declared, problems = {}, []
        for spec in PARAMETERS:
            # Float parameters are dynamically typed so an integer (`-p frame_deadline_ms:=100`) is accepted;
            # the table still checks the type, and the value is stored back as a float below.
            desc = ParameterDescriptor(description=spec.description, read_only=not spec.runtime,
                                       dynamic_typing=isinstance(spec.default, float))
            try:
                declared[spec.name] = self.node.declare_parameter(spec.name, spec.default, desc).value
            except (InvalidParameterTypeException, ParameterException) as exc:
                problems.append(f"parameter {spec.name!r} must be of type {type(spec.default).__name__}: {exc}")
        if problems:
            raise ConfigError("; ".join(problems))
        values = validate(declared)
        ints = [Parameter(k, Parameter.Type.DOUBLE, v) for k, v in values.items()
                if isinstance(v, float) and isinstance(declared[k], int)]
        if ints:
            self.node.set_parameters(ints)
        return values

    def _coerce_incoming(self, parameters: list[Parameter]) -> list[Parameter]:
        """`ros2 param set ... frame_deadline_ms 100` sends an integer: store the float it means."""
        out = []
        for p in parameters:
            spec = SPECS.get(p.name)
            if spec is not None and isinstance(spec.default, float) and p.type_ == Parameter.Type.INTEGER:
                p = Parameter(p.name, Parameter.Type.DOUBLE, float(p.value))
            out.append(p)
        return out

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        changes = {p.name: p.value for p in parameters if p.name in SPECS}
        try:
            values = validate({**self.params, **changes})
            self._apply(values, set(changes))
        except (ConfigError, ModelLoadError) as exc:
            self.log.warning(f"parameter change rejected: {exc}")
            return SetParametersResult(successful=False, reason=str(exc))
        except Exception as exc:  # a failed change must never take the running node down
            self.log.error(f"parameter change failed: {exc!r}")
            return SetParametersResult(successful=False, reason=f"{exc.__class__.__name__}: {exc}")
        if changes:
            self.log.info("parameters changed: " + ", ".join(f"{k}={values[k]!r}" for k in sorted(changes)))
        return SetParametersResult(successful=True)

    def _apply(self, values: dict, changed: set[str]) -> None:
        """Build what the change needs beside the running pipeline, then swap between frames."""
        if self.pipeline is None:  # not configured (lifecycle): the values are used at configure
            if "model_path" in changed:
                resolve_model_path(values["model_path"])  # a wrong path is rejected now, not at configure
            self.params = values
            return
        new = None
        if changed & (ENGINE_PARAMS | PROCESSOR_PARAMS):
            engine, path = load_engine(values) if changed & ENGINE_PARAMS else \
                (self.pipeline.engine, self.pipeline.model_path)
            new = Pipeline(engine, make_processor(engine, values, log=self.log.warning), path)
        with self._frame_lock:
            old, self.pipeline = self.pipeline, new or self.pipeline
            self._set_top_k(self.pipeline, values["top_k"])
            self.params = values
        if new is not None:
            old.processor.close()
        if "diagnostics_period_s" in changed and self._timer is not None:
            self._start_timer()

    @staticmethod
    def _set_top_k(pipeline: Pipeline, k: int) -> None:
        pipeline.engine.top_k = k
        for client in getattr(pipeline.processor, "clients", ()):
            client.top_k = k

    # --- lifecycle steps ----------------------------------------------------------------------------
    @property
    def configured(self) -> bool:
        return self.pipeline is not None

    @property
    def active(self) -> bool:
        return self._subscription is not None

    def configure(self, strict_edge: bool = False) -> None:
        """Load the model, build the processor, check the edge, create the publishers.
        strict_edge: in mode edge, no ready replica is a ConfigError (else a warning)."""
        p = self.params
        engine, path = load_engine(p)
        self.pipeline = Pipeline(engine, make_processor(engine, p, log=self.log.warning), path)
        self._check_edge(strict_edge)
        out_qos = qos.output_qos()
        self._pubs = {
            "result": self._factory.create(String, p["result_topic"], out_qos),
            "mask": self._factory.create(Image, p["mask_topic"], out_qos),
            "overlay": self._factory.create(Image, p["overlay_topic"], out_qos),  # publish_overlay may change
            "diagnostics": self._factory.create(DiagnosticArray, "/diagnostics", out_qos),
        }
        self.log.info(f"configured: model {engine.model_id}, mode {p['mode']}")

    def activate(self) -> None:
        p = self.params
        self._slot = LatestSlot()
        self._worker = threading.Thread(target=self._work, args=(self._slot,), name="perception_worker",
                                        daemon=True)
        self._worker.start()
        msg_type = CompressedImage if p["compressed_input"] else Image
        self._subscription = self.node.create_subscription(
            msg_type, p["input_topic"], self._on_frame, qos.sensor_qos(p["qos_depth"], p["qos_reliability"]))
        self._start_timer()
        engine = self.pipeline.engine
        self.log.info(f"ready: model {engine.model_id} ({engine.task}, {self.pipeline.model_path}), mode {p['mode']}, "
                      f"input {p['input_topic']} ({msg_type.__name__}, {p['qos_reliability']} depth {p['qos_depth']})")

    def deactivate(self) -> None:
        """Stop taking frames; the frame in hand (and a pending one) is still answered."""
        if self._subscription is not None:
            self.node.destroy_subscription(self._subscription)
            self._subscription = None
        if self._timer is not None:
            self.node.destroy_timer(self._timer)
            self._timer = None
        if self._slot is not None:
            self._slot.close()
            self._worker.join(WORKER_JOIN_S)
            self._slot = self._worker = None

    def cleanup(self) -> None:
        """Release the processor, the model and the publishers (frame counters stay)."""
        self.deactivate()
        if self.pipeline is not None:
            self.pipeline.processor.close()
            self.pipeline = None
        for pub in self._pubs.values():
            self._factory.destroy(pub)
        self._pubs = {}

    close = cleanup

    def _check_edge(self, strict: bool) -> None:
        clients = getattr(self.pipeline.processor, "clients", [])
        if self.params["mode"] == "local" or not clients:
            return
        ready = [c.url for c in clients if c.model_ready(EDGE_CHECK_TIMEOUT_S)]
        missing = [c.url for c in clients if c.url not in ready]
        if ready:
            self.log.info(f"edge model {clients[0].served_name!r} ready on {', '.join(ready)}")
        if not missing:
            return
        message = f"edge model {clients[0].served_name!r} not ready on {', '.join(missing)}"
        if strict and not ready and self.params["mode"] == "edge":
            raise ConfigError(f"{message}; mode edge has no local fallback")
        self.log.warning(f"{message}; frames go to the local model or the other replicas until it is")

    def _start_timer(self) -> None:
        if self._timer is not None:
            self.node.destroy_timer(self._timer)
        self._timer = self.node.create_timer(self.params["diagnostics_period_s"], self._publish_diagnostics)

    # --- camera callback: never blocks on inference -----------------------------------------------
    def _on_frame(self, msg) -> None:
        received = time.monotonic()
        self.stats.count("frames_in")
        if self._slot.put((msg, received)):
            self.stats.count("dropped")

    # --- worker thread ------------------------------------------------------------------------------
    def _work(self, slot: LatestSlot) -> None:
        while True:
            ok, item = slot.take(timeout=0.5)
            if not ok:
                if slot.closed:
                    return
                continue
            with self._frame_lock:
                try:
                    self._handle(*item)
                except Exception as exc:  # publishing during shutdown, or a bug: count it, keep serving
                    if slot.closed:
                        return  # stopping: the ROS context may already be gone
                    self.stats.count("errors")
                    self.log.error(f"frame processing failed: {exc!r}", throttle_duration_sec=LOG_THROTTLE_S)

    def _handle(self, msg, received: float) -> None:
        header, pipeline, params = msg.header, self.pipeline, self.params
        try:
            rgb = image_msgs.msg_to_rgb(msg)
        except image_msgs.ImageDecodeError as exc:
            self.stats.count("bad_frames")
            self.log.error(f"bad frame {header.frame_id!r} @ {header.stamp.sec}.{header.stamp.nanosec:09d}: {exc}",
                           throttle_duration_sec=LOG_THROTTLE_S)
            return
        result = pipeline.processor.process(rgb, received, received + params["frame_deadline_ms"] / 1000.0)
        if result.mask is not None:
            self._pubs["mask"].publish(image_msgs.mask_to_image(result.mask, header))
            if params["publish_overlay"]:
                blend = postprocess.overlay(rgb, result.mask, pipeline.engine.meta.num_classes)
                self._pubs["overlay"].publish(image_msgs.rgb_to_image(blend, header))
        elif result.detections is not None and params["publish_overlay"]:
            boxes = detection.draw_detections(rgb, result.detections)
            self._pubs["overlay"].publish(image_msgs.rgb_to_image(boxes, header))
        payload = result.to_dict(header.stamp.sec, header.stamp.nanosec, header.frame_id)
        self._pubs["result"].publish(String(data=json.dumps(payload)))
        self.stats.result(result.latency_ms)

    # --- diagnostics ----------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        pipeline = self.pipeline
        if pipeline is None:
            return
        snap = self.stats.snapshot()
        level, message = diagnostics.status_level(snap, self._last_diag)
        if self._worker is not None and not self._worker.is_alive():
            level, message = diagnostics.DiagnosticStatus.ERROR, "worker thread stopped"
        self._last_diag = snap
        info = {"model_id": pipeline.engine.model_id, "task": pipeline.engine.task, "mode": self.params["mode"],
                "model_path": str(pipeline.model_path), "input_topic": self.params["input_topic"]}
        pairs = diagnostics.key_values(info, snap, pipeline.processor.status())
        self._pubs["diagnostics"].publish(diagnostics.make_diagnostic_array(
            self.node.get_clock().now().to_msg(), f"{self.node.get_name()}: perception", pipeline.engine.model_id,
            level, message, pairs))


class PerceptionNode(Node):
    """The plain node: configured and active from construction until close()."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self.core = PerceptionCore(self, PublisherFactory(self.create_publisher, self.destroy_publisher))
        self.core.configure()
        self.core.activate()

    def close(self) -> None:
        self.core.close()


class LifecyclePerceptionNode(LifecycleNode):
    """The managed node: starts unconfigured and follows the standard lifecycle_msgs transitions.

    configure loads the model and checks the edge (mode edge: a replica must be ready), activate subscribes and
    publishes, deactivate stops without losing state, cleanup releases, shutdown ends the process (`finished`).
    """

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self.core = PerceptionCore(self, PublisherFactory(self.create_lifecycle_publisher,
                                                          self.destroy_lifecycle_publisher))
        self.finished = Future()

    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            self.core.configure(strict_edge=True)
        except (ConfigError, ModelLoadError) as exc:
            self.get_logger().error(f"configure failed: {exc}")
            self.core.cleanup()
            return TransitionCallbackReturn.FAILURE
        return super().on_configure(state)

    def on_activate(self, state) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # enable the publishers before the first frame can arrive
        self.core.activate()
        return result

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self.core.deactivate()  # the last frames are published while the publishers still are enabled
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self.core.cleanup()
        return super().on_cleanup(state)

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self.core.close()
        self.finished.set_result(True)
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state) -> TransitionCallbackReturn:
        self.get_logger().error(f"error in transition from {state.label}: releasing everything")
        self.core.close()
        return TransitionCallbackReturn.SUCCESS

    def close(self) -> None:
        self.core.close()
