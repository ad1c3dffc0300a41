"""Architecture rules as tests: the robot never needs torch, and dependencies point inward."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "robot_compress"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(sub: str):
    files = sorted((PKG / sub).rglob("*.py"))
    assert files, f"no modules under robot_compress/{sub}"
    return files


@pytest.mark.parametrize("path", _modules("runtime"), ids=lambda p: p.name)
def test_runtime_imports_neither_torch_nor_ros_nor_toolkit(path):
    bad = {m for m in _imports(path) if m.split(".")[0] in ("torch", "torchvision", "rclpy", "sensor_msgs",
                                                             "std_msgs", "diagnostic_msgs")
           or m.startswith(("robot_compress.compress", "robot_compress.ros"))}
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", _modules("ros"), ids=lambda p: p.name)
def test_ros_layer_never_imports_the_toolkit(path):
    bad = {m for m in _imports(path) if m.split(".")[0] in ("torch", "torchvision")
           or m.startswith("robot_compress.compress")}
    assert not bad, f"{path.name} imports {bad}"


def test_node_and_runtime_load_without_torch_in_sys_modules():
    """Importing the whole robot side (node included) must not drag torch in, even when installed."""
    code = (
        "import sys, importlib, pkgutil, robot_compress.runtime as rt, robot_compress.ros as ros\n"
        "for pkg in (rt, ros):\n"
        "    for m in pkgutil.iter_modules(pkg.__path__):\n"
        "        importlib.import_module(pkg.__name__ + '.' + m.name)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'torch_pruning')]\n"
        "print('LOADED', bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cli_help_runs_without_importing_torch():
    code = (
        "import sys, contextlib, io\n"
        "from robot_compress.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    rc = main(['--help'])\n"
        "assert rc == 0 and 'replay' in out.getvalue() and 'distill' in out.getvalue()\n"
        "sys.exit(1 if 'torch' in sys.modules else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cli_unknown_command_exits_2(capsys):
    from robot_compress.cli import main

    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err
