"""Architecture rules as tests: the robot never needs torch, and dependencies point inward.

    tools, bench, docs, test  ->  ros  ->  runtime        (and anything may use robot_compress.paths)
    compress (torch)          ->  runtime

What runs on the robot (runtime/, ros/) imports no tools, no toolkit (compress/) and no test fakes. The fault
proxy and the random-weight model builder stay in tools/ because the demo uses them (link drop, models when
none are shipped); the rules below keep them off the robot's import graph. Every import counts, also one inside
a function and a relative one.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "robot_compress"
TEST_HELPERS = {p.stem for p in Path(__file__).parent.glob("*.py") if not p.stem.startswith("test_")}

# layer -> the robot_compress modules it may import (prefixes); anything else of ours is a violation.
ALLOWED_INSIDE = {
    "runtime": ("robot_compress.runtime",),
    "ros": ("robot_compress.ros", "robot_compress.runtime", "robot_compress.paths"),
}
# layer -> third-party top-level packages it must not import.
FORBIDDEN_OUTSIDE = {
    "runtime": {"torch", "torchvision", "torch_pruning", "rclpy", "sensor_msgs", "std_msgs", "diagnostic_msgs",
                "rcl_interfaces"},
    "ros": {"torch", "torchvision", "torch_pruning"},
}


def imported_modules(path: Path, package: str) -> set[str]:
    """Absolute names of every module `path` imports; `package` is the file's own package, for relative imports.
    `from a import b` yields both `a` and `a.b` (b may be a module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def violations(path: Path, layer: str, package: str) -> list[str]:
    """The imports of `path` (a module of `layer`) that break the layering rules."""
    bad = []
    for name in sorted(imported_modules(path, package)):
        top = name.split(".")[0]
        if top == "robot_compress" and name != "robot_compress":
            if not name.startswith(ALLOWED_INSIDE[layer]):
                bad.append(f"{layer} -> {name}")
        elif top in FORBIDDEN_OUTSIDE[layer] or top in TEST_HELPERS:
            bad.append(f"{layer} -> {name}")
    return bad


def _modules(sub: str):
    files = sorted((PKG / sub).rglob("*.py"))
    assert files, f"no modules under robot_compress/{sub}"
    return files


@pytest.mark.parametrize("layer", ALLOWED_INSIDE)
def test_robot_layers_import_only_inward(layer):
    found = {p.name: violations(p, layer, f"robot_compress.{layer}") for p in _modules(layer)}
    assert not {k: v for k, v in found.items() if v}


def import_cycles(package_dir: Path, package: str) -> list[list[str]]:
    """Groups of modules of one package that import each other, directly or round a loop (imports inside
    functions count: they still make the two modules one unit to read and test)."""
    mods = {p.stem for p in package_dir.glob("*.py") if p.stem != "__init__"}
    edges = {m: {n.split(".")[len(package.split("."))] for n in imported_modules(package_dir / f"{m}.py", package)
                 if n.startswith(package + ".") and n.split(".")[len(package.split("."))] in mods} - {m}
             for m in mods}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for m in sorted(mods):
        if m not in index:
            visit(m)
    return cycles


@pytest.mark.parametrize("sub", ["compress", "runtime", "ros", "tools"])
def test_no_import_cycles_inside_a_layer(sub):
    assert import_cycles(PKG / sub, f"robot_compress.{sub}") == []


def test_the_cycle_checker_finds_a_loop(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("from robot_compress.pkg.b import x\n")
    (pkg / "b.py").write_text("def f():\n    from robot_compress.pkg import a\n")
    (pkg / "c.py").write_text("from robot_compress.pkg.a import y\n")
    assert import_cycles(pkg, "robot_compress.pkg") == [["a", "b"]]


def test_paths_module_depends_on_nothing_of_ours():
    assert not [m for m in imported_modules(PKG / "paths.py", "robot_compress") if m.startswith("robot_compress")]


@pytest.mark.parametrize("line, expected", [
    ("from robot_compress.tools.ros_env import PACKAGE_ROOT", "ros -> robot_compress.tools.ros_env"),
    ("from robot_compress import tools", "ros -> robot_compress.tools"),
    ("from ..tools import faultproxy", "ros -> robot_compress.tools.faultproxy"),
    ("def f():\n    import robot_compress.compress.train", "ros -> robot_compress.compress.train"),
    ("from edge_fixtures import start_server", "ros -> edge_fixtures"),
    ("import torch", "ros -> torch"),
])
def test_the_checker_catches_a_bad_import_in_the_ros_layer(tmp_path, line, expected):
    """The rules above are only as good as the checker: a ros -> tools import (absolute, relative, inside a
    function) must be reported, while the imports ros really has pass."""
    module = tmp_path / "bad_node.py"
    module.write_text(f"from robot_compress.runtime.engine import Engine\n{line}\n")
    assert expected in violations(module, "ros", "robot_compress.ros")
    module.write_text("from robot_compress.runtime import engine\nfrom . import qos\nimport rclpy\n")
    assert violations(module, "ros", "robot_compress.ros") == []


def test_node_and_runtime_load_without_torch_tools_or_toolkit_in_sys_modules():
    """Importing the whole robot side (node included) must drag in neither torch (even when installed) nor the
    tools or the toolkit."""
    code = (
        "import sys, importlib, pkgutil, robot_compress.runtime as rt, robot_compress.ros as ros\n"
        "for pkg in (rt, ros):\n"
        "    for m in pkgutil.iter_modules(pkg.__path__):\n"
        "        importlib.import_module(pkg.__name__ + '.' + m.name)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'torch_pruning')\n"
        "       or m.startswith(('robot_compress.tools', 'robot_compress.compress'))]\n"
        "print('LOADED', bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    _python_exits_0(code, timeout=120)


def test_cli_help_runs_without_importing_torch():
    code = (
        "import sys, contextlib, io\n"
        "from robot_compress.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    rc = main(['--help'])\n"
        "assert rc == 0 and 'replay' in out.getvalue() and 'distill' in out.getvalue()\n"
        "sys.exit(1 if 'torch' in sys.modules else 0)\n"
    )
    _python_exits_0(code, timeout=60)


def _python_exits_0(code: str, timeout: float) -> None:
    """Run `code` in a fresh interpreter (this one has imported everything already)."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cli_unknown_command_exits_2(capsys):
    from robot_compress.cli import main

    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err
