"""launch/perception.launch.xml and config/perception.yaml against the package and the node.

`ros2 launch` is not installable here, so the launch file is checked structurally and the node is then
started exactly as launch would start it (`--ros-args -r __node:=... --params-file ... -p ...`).
"""
from __future__ import annotations

import ast
import importlib
import re
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from robot_compress.ros.parameters import PARAMETERS, Param
from robot_compress.ros.perception_node import NODE_NAME

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "perception.launch.xml"
LIFECYCLE_LAUNCH = REPO / "launch" / "perception_lifecycle.launch.xml"
LAUNCHES = {"plain": (LAUNCH, "perception_node"), "lifecycle": (LIFECYCLE_LAUNCH, "perception_lifecycle_node")}
CONFIG = REPO / "config" / "perception.yaml"
SPECS: dict[str, Param] = {p.name: p for p in PARAMETERS}


def _launch(path=LAUNCH):
    return ET.parse(path).getroot()


def _package_name() -> str:
    return ET.parse(REPO / "package.xml").getroot().findtext("name")


def _console_scripts() -> dict[str, str]:
    """name -> 'module:function' from setup.py's entry_points literal (setup.py is not executed)."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            scripts = ast.literal_eval(node.value)["console_scripts"]
            return dict(tuple(part.strip() for part in s.split("=", 1)) for s in scripts)
    raise AssertionError("setup.py has no entry_points")


def _resolve(text: str, args: dict[str, str]) -> str:
    """The two substitutions the launch file uses; the source tree mirrors share/robot_compress."""
    text = re.sub(r"\$\(var (\w+)\)", lambda m: args[m.group(1)], text)
    return text.replace(f"$(find-pkg-share {_package_name()})", str(REPO))


def _yaml_params() -> dict:
    doc = yaml.safe_load(CONFIG.read_text())
    assert list(doc) == ["/**"], "config must apply to the node whatever name launch gives it"
    return doc["/**"]["ros__parameters"]


@pytest.mark.parametrize("kind", LAUNCHES)
def test_launch_file_parses_and_names_this_package_and_executable(kind):
    path, executable = LAUNCHES[kind]
    root = _launch(path)
    assert root.tag == "launch"
    nodes = root.findall("node")
    assert len(nodes) == 1
    node = nodes[0]
    assert node.get("pkg") == _package_name() == "robot_compress"
    assert node.get("name") == NODE_NAME and node.get("exec") == executable
    scripts = _console_scripts()
    assert node.get("exec") in scripts
    module, func = scripts[node.get("exec")].split(":")
    assert callable(getattr(importlib.import_module(module), func))


@pytest.mark.parametrize("kind", LAUNCHES)
def test_launch_args_are_defined_and_params_are_declared_by_the_node(kind):
    path = LAUNCHES[kind][0]
    root = _launch(path)
    args = {a.get("name"): a.get("default") for a in root.findall("arg")}
    used = set(re.findall(r"\$\(var (\w+)\)", path.read_text()))
    assert used <= set(args), f"launch uses undefined args {used - set(args)}"
    params = root.find("node").findall("param")
    files = [p.get("from") for p in params if p.get("from")]
    assert len(files) == 1
    assert Path(_resolve(files[0], args)) == CONFIG
    for p in params:
        if p.get("name"):
            assert p.get("name") in SPECS, f"launch sets undeclared parameter {p.get('name')!r}"
    # The launch default for model_path is the config's default, so the two never disagree silently.
    assert args["model_path"] == _yaml_params()["model_path"] == SPECS["model_path"].default


def test_setup_installs_launch_and_config_into_share():
    text = (REPO / "setup.py").read_text()
    assert '"share/" + PACKAGE + "/launch", glob("launch/*.launch.xml")' in text
    assert 'glob("config/*.yaml")' in text


def test_yaml_sets_every_declared_parameter_with_its_type():
    values = _yaml_params()
    assert set(values) == set(SPECS), f"undeclared: {set(values) - set(SPECS)}, missing: {set(SPECS) - set(values)}"
    for name, value in values.items():
        spec = SPECS[name]
        assert type(value) is type(spec.default), f"{name}: YAML {type(value).__name__}, node {spec.ros_type}"
        assert spec.check is None or spec.check(value) is None, f"{name}={value!r} fails the node's own check"


def test_every_parameter_has_a_description_naming_allowed_values():
    for spec in PARAMETERS:
        assert len(spec.description) > 20
    assert "best_effort|reliable" in SPECS["qos_reliability"].description
    assert "local|edge|auto" in SPECS["mode"].description


@pytest.mark.ros
def test_node_started_as_launch_would_declares_the_config(tmp_path):
    from node_harness import NodeProcess, Peer
    from rcl_interfaces.msg import ParameterType
    from rclpy.parameter import parameter_value_to_python
    from rclpy.parameter_client import AsyncParameterClient

    from robot_compress.tools.synthetic_models import make_model

    model = make_model(tmp_path / "seg.onnx", input_size=(16, 16))
    name = f"perception_node_{uuid.uuid4().hex[:8]}"  # launch uses perception_node; unique on a shared domain
    node = NodeProcess(CONFIG, params={"model_path": str(model)}, node_name=name, log_dir=tmp_path)
    peer = Peer(input_topic=f"/unused_{name}")
    try:
        client = AsyncParameterClient(peer.node, name)
        peer.wait_until(client.services_are_ready, 60, "the node's parameter services", node)

        def call(future):
            peer.wait_until(future.done, 30, "a parameter service reply", node)
            return future.result()

        names = [p.name for p in PARAMETERS]
        described = {d.name: d for d in call(client.describe_parameters(names)).descriptors}
        replies = call(client.get_parameters(names)).values
        values = dict(zip(names, (parameter_value_to_python(v) for v in replies), strict=True))
        expected = {**_yaml_params(), "model_path": str(model)}
        for spec in PARAMETERS:
            assert described[spec.name].type == spec.ros_type != ParameterType.PARAMETER_NOT_SET
            assert described[spec.name].description == spec.description
            assert described[spec.name].read_only is not spec.runtime, f"{spec.name}: read-only flag"
            assert values[spec.name] == expected[spec.name], spec.name
        assert node.alive()
        assert node.stop() == 0, node.output
    finally:
        peer.close()
        node.close()
