"""ros/startup.py silences exactly rclpy's half-built-executor report, nothing else."""
from __future__ import annotations

import sys
import types

from robot_compress.ros import startup


def _report(exc, qualname):
    obj = types.SimpleNamespace(__qualname__=qualname)
    return types.SimpleNamespace(exc_type=type(exc), exc_value=exc, exc_traceback=None, err_msg=None, object=obj)


def test_only_the_half_built_executor_report_is_dropped(monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    startup._quiet_half_built_executors()
    sys.unraisablehook(_report(AttributeError("object has no attribute '_sigint_gc'"), "Executor.__del__"))
    assert seen == []
    other = [_report(AttributeError("no attribute '_sigint_gc'"), "Other.__del__"),
             _report(RuntimeError("_sigint_gc"), "Executor.__del__"),
             _report(AttributeError("no attribute 'x'"), "Executor.__del__")]
    for report in other:
        sys.unraisablehook(report)
    assert seen == other
