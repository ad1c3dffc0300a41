"""Where the package's files are: the one definition of the package name, the source tree's root and the
share-directory lookup. Standard library only, so the node, the tools and the tests can all use it.

A file the package installs under share/robot_compress (models/, config/, launch/) is looked up in the
installed share directory first (colcon / ament), then in the source tree (a checkout or `pip install -e`).
"""
from __future__ import annotations

from pathlib import Path

PACKAGE = "robot_compress"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the source tree (repository root) of this checkout


def share_dirs() -> list[Path]:
    """The installed share/robot_compress directory (when ament knows the package), then the source tree."""
    dirs = []
    try:
        from ament_index_python.packages import get_package_share_directory

        dirs.append(Path(get_package_share_directory(PACKAGE)))
    except Exception:  # not installed through ament (source checkout / pip -e), or ament_index missing
        pass
    dirs.append(PACKAGE_ROOT)
    return dirs


def data_dirs(sub: str) -> list[Path]:
    """Candidates for a data folder (`models`, `config`, ...), in lookup order."""
    return [d / sub for d in share_dirs()]
