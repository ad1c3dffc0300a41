"""DDS confinement for tests, benchmarks and the demo: traffic never leaves this machine.

`localhost_dds_env()` returns the variables every ROS 2 process we start must carry: discovery limited
to localhost, the Fast DDS profile with shared memory (16 MB segments) and UDPv4 on 127.0.0.1 only,
and a ROS_DOMAIN_ID private to this run.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

from robot_compress.paths import data_dirs


def fastdds_profile() -> Path:
    """The localhost profile: from an installed share/ directory, else from the source tree."""
    for folder in data_dirs("config"):
        if (folder / "fastdds_localhost.xml").is_file():
            return folder / "fastdds_localhost.xml"
    raise FileNotFoundError("config/fastdds_localhost.xml not found (share/robot_compress or source tree)")


def pick_domain_id() -> int:
    """A domain id for one run; 1..100 keeps clear of 0 (the default everyone else uses)."""
    return random.SystemRandom().randint(1, 100)


def localhost_dds_env(domain_id: int | None = None, base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(fastdds_profile())
    env["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(domain_id)
    elif "ROS_DOMAIN_ID" not in env:
        env["ROS_DOMAIN_ID"] = str(pick_domain_id())
    env.pop("ROS_LOCALHOST_ONLY", None)  # deprecated; conflicts with the discovery range
    return env


def apply_localhost_dds(domain_id: int | None = None) -> dict:
    """Set the confinement variables in this process (before rclpy.init) and return them."""
    env = localhost_dds_env(domain_id)
    keys = ("ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_DEFAULT_PROFILES_FILE", "RMW_IMPLEMENTATION", "ROS_DOMAIN_ID")
    for key in keys:
        os.environ[key] = env[key]
    os.environ.pop("ROS_LOCALHOST_ONLY", None)
    return env
