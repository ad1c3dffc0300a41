"""perception_node's parameters: one table drives declaration, start-up and live validation, read-only flags,
config/perception.yaml and its test, and README.md's parameter table (`python -m robot_compress.ros.parameters
--readme README.md`). The typed settings the runtime takes (FailoverConfig, the edge replicas) are built here
too, so the runtime never reads a ROS parameter name; the failover defaults come from FailoverConfig itself.

Plain Python (rclpy is imported only where a ROS type constant is asked for), so the entry points can import
this before anything heavy. `runtime=True` marks a parameter that may change while the node runs (`ros2 param
set`); the others are declared read-only. Integers are accepted for float parameters (`-p frame_deadline_ms:=100`).
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from robot_compress.paths import data_dirs
from robot_compress.runtime.edge_protocol import PAYLOADS
from robot_compress.runtime.failover import MODES, FailoverConfig

NODE_NAME = "perception_node"  # both executables; launch may rename it
RELIABILITY = ("best_effort", "reliable")  # robot_compress.ros.qos maps them to policies
POLICY_DEFAULTS = FailoverConfig()  # the failover parameters' defaults, in seconds


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 6)


class ConfigError(ValueError):
    """A parameter value the node cannot run with (the message names the parameter)."""


@dataclass(frozen=True)
class Param:
    name: str
    default: str | bool | int | float | list
    description: str
    check: Callable[[object], str | None] | None = None  # returns a complaint, or None when fine
    runtime: bool = False  # may change while the node runs; otherwise declared read-only

    @property
    def ros_type(self) -> int:
        from rcl_interfaces.msg import ParameterType

        return {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
                float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
                list: ParameterType.PARAMETER_STRING_ARRAY}[type(self.default)]


def _one_of(*allowed):
    return lambda v: None if v in allowed else f"must be one of {', '.join(allowed)}"


def _at_least(low):
    return lambda v: None if v >= low else f"must be >= {low}"


def _positive(v):
    return None if v > 0 else "must be > 0"


def _topic(v):
    return None if v.strip() else "must be a non-empty topic name"


def _url(v):
    return None if v.startswith("http://") and len(v) > len("http://") else "must look like http://HOST:PORT"


def _urls(v):
    if not v:
        return "must list at least one URL (http://HOST:PORT)"
    bad = [u for u in v if _url(u)]
    if bad:
        return f"must hold URLs like http://HOST:PORT, not {bad[0]!r}"
    twice = [u for i, u in enumerate(v) if u in v[:i]]
    return f"lists {twice[0]} twice" if twice else None


PARAMETERS: tuple[Param, ...] = (
    Param("model_path", "camvid_lraspp_student.onnx",
          "ONNX model with robot_compress metadata. Absolute path, or a file name looked up in "
          "share/robot_compress/models, then the source tree's models/. Changing it at runtime loads the new "
          "model beside the old one and swaps between frames; a model that cannot load is rejected.",
          lambda v: None if v else "must be set", runtime=True),
    Param("input_topic", "/camera/image_raw", "Camera topic (sensor_msgs/Image, or CompressedImage when "
          "compressed_input is true).", _topic),
    Param("compressed_input", False, "true: subscribe sensor_msgs/CompressedImage (jpeg|png); false: Image "
          "(rgb8|bgr8|rgba8|bgra8|mono8)."),
    Param("result_topic", "perception/result", "std_msgs/String JSON result, one per processed frame.", _topic),
    Param("mask_topic", "perception/mask", "sensor_msgs/Image mono8 class-id mask (segmentation).", _topic),
    Param("overlay_topic", "perception/overlay", "sensor_msgs/Image rgb8 overlay: mask colours or boxes.", _topic),
    Param("publish_overlay", False, "true|false: publish the overlay (costs ~1 MB per frame).",
          runtime=True),
    Param("threads", 1, "onnxruntime intra-op threads, integer >= 1 (a change reloads the model).", _at_least(1),
          runtime=True),
    Param("qos_depth", 5, "Camera subscription history depth, integer >= 1.", _at_least(1)),
    Param("qos_reliability", "best_effort", "Camera subscription reliability: best_effort|reliable.",
          _one_of(*RELIABILITY)),
    Param("top_k", 5, "Classification labels per result, integer >= 1.", _at_least(1), runtime=True),
    Param("mode", "local", "Where frames are processed: local|edge|auto. local: on-robot model only, no "
          "network; edge: edge server only (a failed frame is an error); auto: edge with hedged local "
          "failover (docs/EDGE.md).", _one_of(*MODES), runtime=True),
    Param("frame_deadline_ms", _ms(POLICY_DEFAULTS.deadline_s), "Per-frame deadline after receipt in ms (> 0). "
          "Misses are counted and drive failover in auto mode.", _positive, runtime=True),
    Param("diagnostics_period_s", 1.0, "Period of /diagnostics reports in seconds (> 0).", _positive,
          runtime=True),
    # Edge offload (mode edge|auto; see robot_compress/runtime/failover.py for the state table).
    Param("edge_urls", ["http://127.0.0.1:8000"], "Edge server replicas in priority order, KServe v2 over HTTP: "
          "[http://HOST:PORT, ...]. Each has its own breaker; a frame unanswered by one after replica_hedge_ms "
          "also goes to the next.", _urls, runtime=True),
    Param("edge_url", "", "Single edge server, http://HOST:PORT; when set it replaces edge_urls (the older "
          "one-server form). Empty: use edge_urls.", lambda v: None if v == "" else _url(v), runtime=True),
    Param("edge_model", "", "Model name on the edge server; empty: the local model's model_id.", runtime=True),
    Param("edge_payload", "jpeg", "Frame encoding sent to the edge: raw|jpeg|float. Sent at the teacher's "
          "input size; jpeg: 16x fewer bytes, fastest on a constrained link (docs/EDGE.md).", _one_of(*PAYLOADS),
          runtime=True),
    Param("hedge_after_ms", _ms(POLICY_DEFAULTS.hedge_after_s), "auto: start local inference if no edge replica "
          "has answered after this many ms (0..frame_deadline_ms).", _at_least(0.0), runtime=True),
    Param("replica_hedge_ms", _ms(POLICY_DEFAULTS.replica_hedge_s), "With several edge_urls: ms each replica gets "
          "before the frame also goes to the next one (0..frame_deadline_ms).",
          _at_least(0.0), runtime=True),
    Param("failure_threshold", POLICY_DEFAULTS.failure_threshold, "auto: consecutive failures that open a "
          "replica's breaker, integer >= 1.", _at_least(1), runtime=True),
    Param("recovery_probes", POLICY_DEFAULTS.recovery_probes, "auto: consecutive healthy probes that close it "
          "again, integer >= 1.", _at_least(1), runtime=True),
    Param("probe_interval_ms", _ms(POLICY_DEFAULTS.probe_interval_s), "auto: first probe delay and spacing of "
          "healthy probes in ms (> 0).", _positive, runtime=True),
    Param("probe_backoff", POLICY_DEFAULTS.probe_backoff, "auto: factor (>= 1) by which the probe delay grows "
          "after a failed probe.", _at_least(1.0), runtime=True),
    Param("probe_backoff_max_ms", _ms(POLICY_DEFAULTS.probe_backoff_max_s), "auto: cap of the probe delay in ms "
          "(>= probe_interval_ms). It bounds the time to notice a restored link.", _positive, runtime=True),
    Param("edge_max_in_flight", POLICY_DEFAULTS.max_in_flight, "Requests outstanding at once per edge replica, "
          "integer >= 1. Beyond it a frame is answered locally.", _at_least(1), runtime=True),
)
SPECS: dict[str, Param] = {p.name: p for p in PARAMETERS}
# What a change needs: a new Engine (and processor), a new processor, or nothing but the stored value.
ENGINE_PARAMS = frozenset({"model_path", "threads"})
PROCESSOR_PARAMS = frozenset({"mode", "frame_deadline_ms", "edge_urls", "edge_url", "edge_model", "edge_payload",
                              "hedge_after_ms", "replica_hedge_ms", "failure_threshold", "recovery_probes",
                              "probe_interval_ms", "probe_backoff", "probe_backoff_max_ms", "edge_max_in_flight"})


def coerce(spec: Param, value):
    """`value` in the parameter's own type (an int for a float parameter becomes a float); ConfigError if it
    has another type."""
    want = type(spec.default)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is list:
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return [str(v) for v in value]
    elif isinstance(value, want) and not (want is int and isinstance(value, bool)):
        return value
    kind = "list of strings" if want is list else want.__name__
    raise ConfigError(f"parameter {spec.name!r} must be of type {kind}, got {value!r}")


def problem(spec: Param, value) -> str | None:
    """Why `value` (already coerced) is not acceptable for `spec`, or None."""
    complaint = spec.check(value) if spec.check else None
    return f"parameter {spec.name!r} {complaint}, got {value!r}" if complaint else None


def relation_problems(values: dict) -> list[str]:
    """Checks between parameters (each alone may be fine)."""
    out = []
    deadline = values["frame_deadline_ms"]
    for name in ("hedge_after_ms", "replica_hedge_ms"):
        if not 0 <= values[name] <= deadline:
            out.append(f"parameter {name!r} must be in [0, frame_deadline_ms={deadline}], got {values[name]}")
    if values["probe_backoff_max_ms"] < values["probe_interval_ms"]:
        out.append(f"parameter 'probe_backoff_max_ms' must be >= probe_interval_ms={values['probe_interval_ms']}, "
                   f"got {values['probe_backoff_max_ms']}")
    return out


def validate(values: dict) -> dict:
    """Coerce and check every value (all parameters present); ConfigError lists every problem at once."""
    problems, out = [], {}
    for spec in PARAMETERS:
        try:
            out[spec.name] = coerce(spec, values[spec.name])
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        found = problem(spec, out[spec.name])
        if found:
            problems.append(found)
    if not problems:
        problems = relation_problems(out)
    if problems:
        raise ConfigError("; ".join(problems))
    return out


# ---- typed settings for the runtime ---------------------------------------------------------------------
@dataclass(frozen=True)
class EdgeSettings:
    """What the edge offload needs besides the local Engine, typed (mode edge or auto)."""

    urls: tuple[str, ...]      # replicas in priority order
    model: str                 # served model name; empty: the local model's model_id
    payload: str               # edge_protocol.PAYLOADS
    failover: FailoverConfig


def edge_settings(values: dict) -> EdgeSettings:
    """From validated values: `edge_url`, when set, replaces `edge_urls`; milliseconds become seconds."""
    urls = (values["edge_url"],) if values["edge_url"] else tuple(values["edge_urls"])
    policy = FailoverConfig(
        mode=values["mode"], deadline_s=values["frame_deadline_ms"] / 1000.0,
        hedge_after_s=values["hedge_after_ms"] / 1000.0, failure_threshold=values["failure_threshold"],
        recovery_probes=values["recovery_probes"], probe_interval_s=values["probe_interval_ms"] / 1000.0,
        probe_backoff=values["probe_backoff"], probe_backoff_max_s=values["probe_backoff_max_ms"] / 1000.0,
        replica_hedge_s=values["replica_hedge_ms"] / 1000.0, max_in_flight=values["edge_max_in_flight"])
    return EdgeSettings(urls, values["edge_model"], values["edge_payload"], policy)


# ---- model_path -------------------------------------------------------------------------------------
def model_search_dirs() -> list[Path]:
    return data_dirs("models")


def resolve_model_path(value: str) -> Path:
    """Absolute paths stay as given (the Engine reports a missing file); names are looked up in models/.
    A directory is refused here, by name, before it can read as a missing file."""
    path = Path(value).expanduser()
    if path.is_absolute():
        if path.is_dir():
            raise ConfigError(f"model_path {value!r} is a directory, not an ONNX model file")
        return path
    candidates = [d / path for d in model_search_dirs()]
    for cand in candidates:
        if cand.is_file():
            return cand
    dirs = [c for c in candidates if c.is_dir()]
    if dirs:
        raise ConfigError(f"model_path {value!r} names a directory ({dirs[0]}), not an ONNX model file")
    raise ConfigError(
        f"model_path {value!r} not found (looked in {', '.join(str(c) for c in candidates)}); "
        f"give an absolute path or put the file in models/"
    )


# ---- the README's parameter table ------------------------------------------------------------------------
def _summary(description: str) -> str:
    """The description's first sentence, safe inside a markdown table cell."""
    first = description.split(". ", 1)[0].rstrip(".") + "."
    return first.replace("|", "\\|")


def markdown_table() -> str:
    """The node's parameters as a markdown table (README.md carries it; test_parameters keeps it in sync).
    The default shows the type (an integer for a float parameter is accepted too)."""
    rows = ["| parameter | default | live | meaning |", "|---|---|---|---|"]
    for p in PARAMETERS:
        default = json.dumps(p.default) if isinstance(p.default, (list, str, bool)) else repr(p.default)
        rows.append(f"| `{p.name}` | `{default}` | {'yes' if p.runtime else 'no'} | {_summary(p.description)} |")
    return "\n".join(rows)


README_BEGIN, README_END = "<!-- parameters:begin -->", "<!-- parameters:end -->"


def with_table(readme: str) -> str:
    """`readme` with the text between the parameter markers replaced by the current table."""
    if README_BEGIN not in readme or README_END not in readme:
        raise ValueError(f"no {README_BEGIN} ... {README_END} markers")
    head, rest = readme.split(README_BEGIN, 1)
    return f"{head}{README_BEGIN}\n{markdown_table()}\n{README_END}{rest.split(README_END, 1)[1]}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m robot_compress.ros.parameters", description=__doc__.split("\n")[0])
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--markdown", action="store_true", help="print the parameter table")
    group.add_argument("--readme", type=Path, metavar="PATH", help="rewrite the table between the markers in PATH")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown_table())
    else:
        args.readme.write_text(with_table(args.readme.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
