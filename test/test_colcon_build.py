"""Build the package the way a robot does (`colcon build`) into a temporary workspace and run it from there."""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from robot_compress.tools.ros_env import localhost_dds_env

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.slow, pytest.mark.ros]


@pytest.fixture(scope="module")
def install(tmp_path_factory):
    colcon = shutil.which("colcon", path=str(VENV_BIN)) or shutil.which("colcon")
    if colcon is None:
        pytest.skip("colcon not installed (pip install -r requirements/dev.txt)")
    ws = tmp_path_factory.mktemp("colcon_ws")
    env = {**localhost_dds_env(), "PATH": f"{VENV_BIN}:{localhost_dds_env()['PATH']}"}
    proc = subprocess.run(
        [colcon, "--log-base", str(ws / "log"), "build", "--base-paths", str(REPO),
         "--build-base", str(ws / "build"), "--install-base", str(ws / "install")],
        cwd=ws, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return ws / "install"


def _sourced(install: Path, command: str, **kw) -> subprocess.Popen:
    """Run `command` in a shell that sourced install/setup.sh, as an operator would."""
    env = {**localhost_dds_env(), "PATH": f"{VENV_BIN}:{localhost_dds_env()['PATH']}"}
    env.pop("PYTHONPATH", None)
    return subprocess.Popen(["bash", "-c", f". {install}/setup.sh && {command}"], env=env, cwd=install.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_install_tree_has_executable_share_files_and_ament_index(install):
    prefix = install / "robot_compress"
    exe = prefix / "lib" / "robot_compress" / "perception_node"
    assert exe.is_file() and exe.stat().st_mode & 0o111
    share = prefix / "share" / "robot_compress"
    for rel in ("package.xml", "launch/perception.launch.xml", "config/perception.yaml",
                "config/fastdds_localhost.xml"):
        assert (share / rel).is_file(), rel
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "robot_compress").is_file()


def test_sourced_install_imports_its_own_copy_and_finds_share(install):
    proc = _sourced(install, 'python -c "import robot_compress, ament_index_python.packages as a; '
                             "print(robot_compress.__file__); print(a.get_package_share_directory('robot_compress'))\"")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    module_file, share = out.strip().splitlines()[-2:]
    assert module_file.startswith(str(install)), out
    assert share == str(install / "robot_compress" / "share" / "robot_compress")


def test_installed_executable_fails_clearly_on_a_bad_model(install):
    proc = _sourced(install, "perception_node --ros-args -p model_path:=/nonexistent/model.onnx")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "cannot start" in out and "/nonexistent/model.onnx" in out


def test_installed_executable_runs_a_model_from_share_models(install):
    from robot_compress.tools.synthetic_models import make_model

    # A model file name (not a path) resolves through the ament index to share/robot_compress/models.
    make_model(install / "robot_compress" / "share" / "robot_compress" / "models" / "colcon_test.onnx",
               input_size=(16, 16))
    proc = _sourced(install, "exec perception_node --ros-args -p model_path:=colcon_test.onnx "
                             "-p input_topic:=/colcon_test/image -r __node:=perception_colcon_test")
    lines = []
    watchdog = threading.Timer(90, proc.kill)  # a hung start fails the test instead of hanging it
    watchdog.start()
    try:
        for line in proc.stdout:  # the node logs one "ready" line once everything is set up
            lines.append(line)
            if "ready:" in line or "cannot start" in line:
                break
        assert "ready:" in lines[-1], "".join(lines)
        assert "share/robot_compress/models/colcon_test.onnx" in lines[-1]
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, "".join(lines) + out
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
