"""Running a node executable: start-up, spin, and a stop signal at any moment exiting 0.

A SIGINT/SIGTERM can land anywhere in start-up: inside `import onnxruntime` (whose module init then fails
with "ImportError: initialization failed"), inside onnxruntime while it loads a model (which then reads as a
model failure with an empty reason), or between imports (a KeyboardInterrupt traceback). So this module, light
enough to load before anything heavy, installs handlers that only *record* a stop until the node spins; each
start-up step finishes, the stop is honoured at the next step boundary, and the process exits 0 with no
message. Once spinning, the same handler raises `_Stop` in the main thread (rclpy's own handler, installed by
rclpy.init, wakes the executor first and chains to it).
"""
from __future__ import annotations

import signal
from collections.abc import Callable

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Stop(Exception):
    """A stop signal while spinning: leave spin and shut down."""


class StopSignals:
    """SIGINT/SIGTERM handler: records a stop during start-up, raises `_Stop` once armed."""

    def __init__(self):
        self.requested = False
        self._armed = False

    def install(self) -> StopSignals:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True
        if self._armed:
            raise _Stop()

    def arm(self) -> None:
        """From now on a stop interrupts (spin); one that came before stops now."""
        self._armed = True
        if self.requested:
            raise _Stop()

    @staticmethod
    def ignore() -> None:
        """Cleanup is bounded (worker join <= 5 s); a second Ctrl-C/SIGTERM must not abort it half-way."""
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


def _quiet_half_built_executors() -> None:
    """rclpy's Executor.__del__ reads `_sigint_gc`, which __init__ sets last: an executor whose __init__ failed
    because a stop had just shut the context down (rclpy.spin builds one) prints an AttributeError traceback while
    being collected. Drop exactly that report; every other unraisable error keeps the default hook."""
    import sys

    default = sys.unraisablehook

    def hook(report) -> None:
        if (isinstance(report.exc_value, AttributeError) and "_sigint_gc" in str(report.exc_value)
                and getattr(report.object, "__qualname__", "") == "Executor.__del__"):
            return
        default(report)

    sys.unraisablehook = hook


def run(make_node: Callable[[], object], args=None, logger_name: str = "perception_node") -> int:
    """Start rclpy, build the node with `make_node()`, spin until stopped (or until the node's `finished`
    future completes: a lifecycle node after its shutdown transition), clean up. Exit code: 0, or 2 with one
    `cannot start: ...` line for a configuration or model problem."""
    stop = StopSignals().install()
    _quiet_half_built_executors()
    try:
        return _run(make_node, args, logger_name, stop)
    except BaseException:
        if stop.requested:  # whatever a stop broke during start-up, it is a stop, not a failure
            return 0
        raise


def _run(make_node, args, logger_name: str, stop: StopSignals) -> int:
    import rclpy  # heavy imports only after the handlers, so a stop inside them is merely recorded
    from rclpy.executors import ExternalShutdownException

    from robot_compress.ros.parameters import ConfigError
    from robot_compress.runtime.engine import ModelLoadError

    if stop.requested:
        return 0
    rclpy.init(args=args)
    node, code = None, 0
    try:
        node = make_node()
        stop.arm()
        if rclpy.ok():  # a stop during start-up has already shut the context down: nothing to spin
            _spin(rclpy, node)
    except (KeyboardInterrupt, ExternalShutdownException, _Stop):
        pass
    except (ConfigError, ModelLoadError) as exc:
        if not stop.requested:
            rclpy.logging.get_logger(logger_name).fatal(f"cannot start: {exc}")
            code = 2
    except RuntimeError:
        # A stop landing between the ok() check and spin's executor set-up: rclpy raises RCLError
        # "context is not valid". A normal stop, not a crash.
        if rclpy.ok() and not stop.requested:
            raise
    finally:
        stop.ignore()
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return code


def _spin(rclpy, node) -> None:
    finished = getattr(node, "finished", None)
    if finished is None:
        rclpy.spin(node)
    else:
        rclpy.spin_until_future_complete(node, finished)
