"""A student builder for test_sweep_ray.py whose process dies once, inside a sweep cell (not a test module).

With ROBOT_COMPRESS_TEST_DIE_ONCE=<marker> set, the first build after the base's student.pt exists (i.e. in a
cell, after the base finished) creates the marker and kills its own process, as a crashed or OOM-killed
worker would end; every later build, and every build without the variable, is a plain tiny_cnn.
"""
from __future__ import annotations

import os
from pathlib import Path

DIE_ENV = "ROBOT_COMPRESS_TEST_DIE_ONCE"
BASE_ENV = "ROBOT_COMPRESS_TEST_BASE_STUDENT"


def tiny_cnn_dies_once(num_classes: int, width: int = 4):
    from robot_compress.compress.models import get_model

    marker, base = os.environ.get(DIE_ENV), os.environ.get(BASE_ENV)
    if marker and base and Path(base).is_file():
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # exactly one process dies
        except FileExistsError:
            pass
        else:
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            os._exit(137)
    return get_model("tiny_cnn", num_classes, width=width)
