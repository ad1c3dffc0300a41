"""QoS strings -> policies, checked without starting ROS."""
import pytest
from rclpy.qos import DurabilityPolicy, HistoryPolicy, ReliabilityPolicy

from robot_compress.ros import qos


def test_reliability_table_maps_names_to_policies():
    assert qos.reliability("best_effort") == ReliabilityPolicy.BEST_EFFORT
    assert qos.reliability("reliable") == ReliabilityPolicy.RELIABLE


def test_unknown_reliability_names_allowed_values():
    with pytest.raises(ValueError, match="best_effort, reliable"):
        qos.reliability("sometimes")


@pytest.mark.parametrize("name,policy", [("best_effort", ReliabilityPolicy.BEST_EFFORT),
                                         ("reliable", ReliabilityPolicy.RELIABLE)])
def test_sensor_qos_keeps_last_depth_volatile(name, policy):
    profile = qos.sensor_qos(7, name)
    assert profile.depth == 7
    assert profile.history == HistoryPolicy.KEEP_LAST
    assert profile.reliability == policy
    assert profile.durability == DurabilityPolicy.VOLATILE


def test_sensor_qos_rejects_zero_depth():
    with pytest.raises(ValueError, match="depth"):
        qos.sensor_qos(0)


def test_outputs_are_reliable_and_bounded():
    profile = qos.output_qos()
    assert profile.reliability == ReliabilityPolicy.RELIABLE
    assert profile.history == HistoryPolicy.KEEP_LAST and profile.depth == qos.OUTPUT_DEPTH


def test_node_parameter_allows_exactly_the_table_names():
    from robot_compress.ros.perception_node import PARAMETERS

    spec = next(p for p in PARAMETERS if p.name == "qos_reliability")
    for name in qos.RELIABILITY:
        assert spec.check(name) is None
        assert name in spec.description
    assert spec.check("sometimes") is not None
