"""ament_python package: the robot runtime installs without torch; the offline toolkit is the `compress` extra."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "robot_compress"


def _read_requirements(path):
    with open(path, encoding="utf-8") as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.startswith(("#", "-"))]


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, PACKAGE + ".*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/launch", glob("launch/*.launch.xml")),
        ("share/" + PACKAGE + "/config", glob("config/*.yaml") + glob("config/*.xml")),
        ("share/" + PACKAGE + "/config/recipes", glob("config/recipes/*.yaml")),
        ("share/" + PACKAGE + "/models", glob("models/*.onnx") + glob("models/*.md") + glob("models/*.json")),
    ],
    # Robot-side dependencies (rclpy and the message packages come from ROS 2 itself, see package.xml).
    install_requires=["numpy", "onnxruntime", "pyyaml"],
    extras_require={
        "compress": ["torch", "torchvision", "torch-pruning", "onnx", "matplotlib", "rich", "pydantic"],
        # sweeps as Ray tasks (`sweep --executor ray`); torchrun data-parallel training needs only torch
        "cluster": ["ray"],
    },
    zip_safe=True,
    maintainer="robot_compress developers",
    maintainer_email="dev@robot-compress.invalid",
    description="Compressed on-robot vision with edge offload and local failover.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "perception_node = robot_compress.ros.perception_node:main",
            "perception_lifecycle_node = robot_compress.ros.lifecycle_node:main",
            "robot-compress = robot_compress.cli:main",
        ],
    },
)
