"""perception_node: camera frames in, segmentation masks / classification results out (the plain node).

The node's logic lives in robot_compress/ros/perception_core.py (shared with the managed lifecycle node,
robot_compress/ros/lifecycle_node.py); its parameters in robot_compress/ros/parameters.py. This module is the
executable: light on purpose, so the stop-signal handling (ros/startup.py) is in place before rclpy,
onnxruntime or a model load begin. A bad value, a missing model or a model without the metadata contract stops
start-up with one `cannot start: ...` line and exit code 2; SIGINT/SIGTERM exit 0, also during start-up.
"""
from __future__ import annotations

from robot_compress.ros import startup
from robot_compress.ros.parameters import (
    NODE_NAME,
    PARAMETERS,
    ConfigError,
    Param,
    resolve_model_path,
)

__all__ = ["NODE_NAME", "PARAMETERS", "ConfigError", "Param", "main", "resolve_model_path"]


def _plain_node():
    from robot_compress.ros.perception_core import PerceptionNode

    return PerceptionNode()


def main(args=None, make_node=None) -> int:
    """Console script `perception_node`. make_node: a node factory (tests)."""
    return startup.run(make_node or _plain_node, args, logger_name=NODE_NAME)


if __name__ == "__main__":
    raise SystemExit(main())
