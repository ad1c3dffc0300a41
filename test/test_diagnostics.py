"""DiagnosticArray building from a stats snapshot and processor status (no ROS graph needed)."""
from diagnostic_msgs.msg import DiagnosticStatus

from robot_compress.ros import diagnostics


def test_level_follows_new_errors_and_bad_frames_since_last_report():
    base = {"errors": 1, "bad_frames": 2}
    assert diagnostics.status_level(base, base)[0] == DiagnosticStatus.OK
    level, message = diagnostics.status_level({"errors": 1, "bad_frames": 5}, base)
    assert level == DiagnosticStatus.WARN and "3 bad frame" in message
    level, message = diagnostics.status_level({"errors": 2, "bad_frames": 5}, base)
    assert level == DiagnosticStatus.ERROR and "1 frame(s) failed" in message
    assert diagnostics.status_level({"errors": 0, "bad_frames": 1}, None)[0] == DiagnosticStatus.WARN


def test_array_carries_info_stats_and_prefixed_processor_status():
    pairs = diagnostics.key_values({"model_id": "m", "mode": "local"}, {"fps": 29.97, "frames_in": 10},
                                   {"state": "local", "deadline_misses": 0})
    arr = diagnostics.make_diagnostic_array(_stamp(), "perception_node: perception", "m",
                                            DiagnosticStatus.OK, "running", pairs)
    assert len(arr.status) == 1 and arr.status[0].hardware_id == "m" and arr.status[0].level == DiagnosticStatus.OK
    assert diagnostics.values_dict(arr) == {"model_id": "m", "mode": "local", "fps": "29.970", "frames_in": "10",
                                            "processor.state": "local", "processor.deadline_misses": "0"}
    assert (arr.header.stamp.sec, arr.header.stamp.nanosec) == (5, 6)
    assert diagnostics.values_dict(arr, name="other") == {}


def _stamp():
    from builtin_interfaces.msg import Time

    return Time(sec=5, nanosec=6)
