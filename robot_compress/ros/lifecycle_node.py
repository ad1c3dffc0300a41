"""perception_lifecycle_node: the perception node as a managed (lifecycle) node.

Starts unconfigured; drive it over the standard lifecycle_msgs services (`ros2 lifecycle set
/perception_node configure|activate|deactivate|cleanup|shutdown`, or a lifecycle manager). configure loads
the model and checks the edge, activate subscribes and publishes, deactivate stops without losing state,
cleanup releases, shutdown ends the process with exit code 0. Same parameters and outputs as perception_node.
"""
from __future__ import annotations

from robot_compress.ros import startup
from robot_compress.ros.parameters import NODE_NAME


def _lifecycle_node():
    from robot_compress.ros.perception_core import LifecyclePerceptionNode

    return LifecyclePerceptionNode()


def main(args=None, make_node=None) -> int:
    """Console script `perception_lifecycle_node`. make_node: a node factory (tests)."""
    return startup.run(make_node or _lifecycle_node, args, logger_name=NODE_NAME)


if __name__ == "__main__":
    raise SystemExit(main())
