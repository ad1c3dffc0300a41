"""Shared fixtures. DDS is confined to this machine for the whole run, on a domain id of its own,
before anything can import rclpy."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from robot_compress.tools.ros_env import apply_localhost_dds

# One private domain per pytest run (override with ROS_DOMAIN_ID to debug).
apply_localhost_dds(int(os.environ["ROS_DOMAIN_ID"]) if os.environ.get("ROS_DOMAIN_ID") else None)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture
def seg_model(tmp_path):
    from robot_compress.tools.synthetic_models import make_model

    return make_model(tmp_path / "seg.onnx", task="segmentation", input_size=(48, 64))


@pytest.fixture
def cls_model(tmp_path):
    from robot_compress.tools.synthetic_models import make_model

    return make_model(tmp_path / "cls.onnx", task="classification", input_size=(32, 32))


def shared_path(*parts) -> Path:
    """A path under ../shared, skipping the test when the data is absent (fresh machines, CI forks)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (../shared not present)")
    return path
