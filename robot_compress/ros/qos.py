"""QoS settings named by strings (node parameters) -> rclpy QoS profiles.

Importing rclpy.qos needs no running ROS context, so the table is testable without starting ROS.
"""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

RELIABILITY = {
    "best_effort": ReliabilityPolicy.BEST_EFFORT,
    "reliable": ReliabilityPolicy.RELIABLE,
}
# Outputs: reliable so a late subscriber on a busy link still gets whole results; shallow so a stalled
# subscriber cannot make the node buffer unboundedly.
OUTPUT_DEPTH = 10


def reliability(name: str) -> ReliabilityPolicy:
    try:
        return RELIABILITY[name]
    except KeyError:
        raise ValueError(f"unknown QoS reliability {name!r}; allowed: {', '.join(RELIABILITY)}") from None


def sensor_qos(depth: int = 5, reliability_name: str = "best_effort") -> QoSProfile:
    """Camera subscription QoS: like rclpy's qos_profile_sensor_data, with depth and reliability chosen."""
    if int(depth) < 1:
        raise ValueError(f"QoS depth must be >= 1, got {depth}")
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=int(depth),
        reliability=reliability(reliability_name),
        durability=DurabilityPolicy.VOLATILE,
    )


def output_qos(depth: int = OUTPUT_DEPTH) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=int(depth),
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )
