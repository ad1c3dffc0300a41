"""diagnostic_msgs/DiagnosticArray from a stats snapshot and the processor's status (values as strings)."""
from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def status_level(snapshot: dict, previous: dict | None) -> tuple[bytes, str]:
    """OK unless frames went bad or processing failed since the previous report."""
    prev = previous or {}
    new_errors = snapshot.get("errors", 0) - prev.get("errors", 0)
    new_bad = snapshot.get("bad_frames", 0) - prev.get("bad_frames", 0)
    if new_errors > 0:
        return DiagnosticStatus.ERROR, f"{new_errors} frame(s) failed processing since last report"
    if new_bad > 0:
        return DiagnosticStatus.WARN, f"{new_bad} bad frame(s) since last report"
    return DiagnosticStatus.OK, "running"


def key_values(info: dict, snapshot: dict, processor_status: dict) -> list[tuple[str, str]]:
    """Ordered (key, value) pairs: node info, frame stats, then the processor's own status."""
    pairs = [(k, _fmt(v)) for k, v in info.items()]
    pairs += [(k, _fmt(v)) for k, v in snapshot.items()]
    pairs += [(f"processor.{k}", _fmt(v)) for k, v in processor_status.items()]
    return pairs


def make_diagnostic_array(stamp, name: str, hardware_id: str, level: bytes, message: str,
                          pairs: list[tuple[str, str]]) -> DiagnosticArray:
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                              values=[KeyValue(key=k, value=v) for k, v in pairs])
    arr = DiagnosticArray(status=[status])
    arr.header.stamp = stamp
    return arr


def values_dict(array: DiagnosticArray, name: str | None = None) -> dict[str, str]:
    """The key/values of the (first or named) status in an array; for tests and tools."""
    for status in array.status:
        if name is None or status.name == name:
            return {kv.key: kv.value for kv in status.values}
    return {}
