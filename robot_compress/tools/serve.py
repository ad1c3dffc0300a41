"""`robot-compress serve`: the edge inference server (NVIDIA Triton via PyTriton, KServe v2 / Open Inference
Protocol over HTTP and gRPC) on 127.0.0.1, serving the ONNX teachers in models/ with onnxruntime inside the
bound inference functions.

PyTriton pins numpy<2, so it lives in its own virtualenv (.venv-edge, `make edge-venv`). When this command
is started from the runtime venv it re-executes itself with the edge venv's interpreter.

Served names per model (model id from the ONNX metadata; the node sends jpeg by default, see docs/EDGE.md):
  {id}          input  image  UINT8 [h, w, 3]      RGB at the model's input size (the client resizes)
  {id}__jpeg    input  jpeg   BYTES [1]            JPEG-encoded RGB frame at the model's input size
  {id}__float   input  tensor FP32  [1, 3, h, w]   preprocessed (normalised) tensor
  outputs       mask   UINT8 [h, w] (segmentation) or logits FP32 [C] (classification); model_id BYTES [1]
                detection: num_detections INT32 [1] = K, boxes FP32 [M, 4], scores FP32 [M], class_ids INT32 [M]
                with M = the model's max_detections: the first K rows are the final detections after NMS,
                highest score first, boxes xyxy in pixels of the image received (the client sends the frame
                resized to the model's input size and scales them back); the rest is zero padding (PyTriton
                cannot send a zero-size tensor, so "no detections" needs a fixed shape and a count)
"""
from __future__ import annotations

import argparse
import io
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

from robot_compress.paths import PACKAGE_ROOT
from robot_compress.runtime.edge_protocol import INPUT_NAME, PAYLOADS, served_name

EDGE_VENV = Path(os.environ.get("ROBOT_COMPRESS_EDGE_VENV", PACKAGE_ROOT / ".venv-edge"))


def edge_python() -> Path | None:
    """The edge venv's interpreter, or None when it is not installed."""
    py = EDGE_VENV / "bin" / "python"
    return py if py.is_file() else None


def server_env(base: dict | None = None) -> dict:
    """Environment for the server process. LD_LIBRARY_PATH gotcha (PLATFORM.md): Triton's Python backend stub
    links libpython3.11; it must find this interpreter's own build, not the system one."""
    env = dict(os.environ if base is None else base)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="robot-compress serve", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", default=[],
                    help="ONNX model to serve (repeatable); default: every *.onnx in --models-dir")
    ap.add_argument("--models-dir", default=str(PACKAGE_ROOT / "models"), help="model repository source folder")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    ap.add_argument("--http-port", type=int, default=8000)
    ap.add_argument("--grpc-port", type=int, default=8001)
    ap.add_argument("--payloads", default="jpeg,raw", help=f"comma-separated subset of {','.join(PAYLOADS)}")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads per model")
    ap.add_argument("--max-lifetime-s", type=float, default=0.0, help="stop after this long (0: run until signal)")
    args = ap.parse_args(argv)
    payloads = [p.strip() for p in args.payloads.split(",") if p.strip()]
    bad = [p for p in payloads if p not in PAYLOADS]
    if bad or not payloads:
        ap.error(f"--payloads must be a subset of {PAYLOADS}, got {args.payloads!r}")
    args.payloads = payloads
    models = [Path(m) for m in args.model] or sorted(Path(args.models_dir).glob("*.onnx"))
    if not models:
        ap.error(f"no ONNX models given and none found in {args.models_dir} (use --model PATH)")
    missing = [str(m) for m in models if not m.is_file()]
    if missing:
        ap.error(f"model file(s) not found: {', '.join(missing)}")
    args.models = models
    return args


def run(command: str, argv: list[str]) -> int:
    args = parse_args(argv)  # validate before re-executing
    try:
        import pytriton  # noqa: F401
    except ModuleNotFoundError:
        py = edge_python()
        if py is None:
            print(f"robot-compress serve: the edge server needs PyTriton in {EDGE_VENV}; create it with "
                  "`make edge-venv`", file=sys.stderr)
            return 2
        os.execve(str(py), [str(py), "-m", "robot_compress.tools.serve", *argv], server_env())
    return serve(args)


def _decode_jpeg(data: bytes):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _make_infer(model_path: Path, payload: str, threads: int):
    import numpy as np

    from robot_compress.runtime import detection, postprocess
    from robot_compress.runtime.engine import Engine

    engine = Engine(model_path, threads=threads)  # one engine per bound model: its buffers are not shared
    in_name = engine.session.get_inputs()[0].name
    model_id = np.array([engine.model_id.encode()], dtype=object)
    max_dets = engine.meta.detection.max_detections if engine.task == "detection" else 0

    def outputs(logits, image_hw):
        if engine.task == "segmentation":
            return {"mask": postprocess.argmax_mask(logits), "model_id": model_id}
        if engine.task == "detection":  # final detections in the received image's pixels, zero-padded to M
            boxes, scores, class_ids = detection.select(logits[0], logits[1], engine.meta)
            k = len(scores)
            out = {"num_detections": np.array([k], np.int32), "boxes": np.zeros((max_dets, 4), np.float32),
                   "scores": np.zeros(max_dets, np.float32), "class_ids": np.zeros(max_dets, np.int32),
                   "model_id": model_id}
            out["boxes"][:k] = detection.scale_boxes(boxes, engine.meta.input_size, image_hw)
            out["scores"][:k] = scores
            out["class_ids"][:k] = class_ids
            return out
        return {"logits": np.ascontiguousarray(logits[0], np.float32), "model_id": model_id}

    def infer(requests):
        results = []
        for req in requests:
            data = req[INPUT_NAME[payload]]
            if payload == "raw":
                image_hw, logits = data.shape[:2], engine.logits(data)
            elif payload == "jpeg":
                image = _decode_jpeg(bytes(data[0]))
                image_hw, logits = image.shape[:2], engine.logits(image)
            else:
                image_hw = engine.meta.input_size
                names = engine.output_names if engine.task == "detection" else None
                logits = engine.session.run(names, {in_name: data.astype(np.float32, copy=False)})
                logits = logits if engine.task == "detection" else logits[0]
            results.append(outputs(logits, image_hw))
        return results

    return engine, infer


def bind_model(triton, model_path: Path, payload: str, threads: int) -> str:
    import numpy as np
    from pytriton.model_config import ModelConfig, Tensor

    engine, infer = _make_infer(model_path, payload, threads)
    h, w = engine.meta.input_size
    dtype, shape = {"raw": (np.uint8, (h, w, 3)), "jpeg": (bytes, (1,)), "float": (np.float32, (1, 3, h, w))}[payload]
    inputs = Tensor(name=INPUT_NAME[payload], dtype=dtype, shape=shape)
    if engine.task == "segmentation":
        outs = [Tensor(name="mask", dtype=np.uint8, shape=(h, w))]
    elif engine.task == "detection":
        m = engine.meta.detection.max_detections
        outs = [Tensor(name="num_detections", dtype=np.int32, shape=(1,)),
                Tensor(name="boxes", dtype=np.float32, shape=(m, 4)),
                Tensor(name="scores", dtype=np.float32, shape=(m,)),
                Tensor(name="class_ids", dtype=np.int32, shape=(m,))]
    else:
        outs = [Tensor(name="logits", dtype=np.float32, shape=(engine.meta.num_classes,))]
    name = served_name(engine.model_id, payload)
    triton.bind(model_name=name, infer_func=infer, inputs=[inputs],
                outputs=[*outs, Tensor(name="model_id", dtype=bytes, shape=(1,))],
                config=ModelConfig(batching=False), strict=True)
    return name


# Runs in its own session, outside the server's process group, so a kill of the group cannot take it along.
_WATCHDOG = """
import os, signal, sys
said = sys.stdin.buffer.read()  # returns at EOF: the server process exited, or was killed
if not said.endswith(b"exit"):
    try:
        os.killpg(int(sys.argv[1]), signal.SIGKILL)
    except ProcessLookupError:
        pass
"""


class GroupWatchdog:
    """`kill -9` of the serve process must not orphan tritonserver and its Python backend stubs.

    PyTriton gives tritonserver a parent-death SIGTERM, but Triton then shuts down gracefully for seconds and
    the stubs (its children) are not covered at all. So the serve process leads its own process group (every
    child inherits it), and a small watchdog in another session holds a pipe from it: at EOF without the
    "exit" word (the server died without cleaning up) it SIGKILLs the whole group at once.
    """

    def __init__(self):
        if os.getpgid(0) != os.getpid():
            os.setpgid(0, 0)  # not already a group leader (e.g. the second stage of a shell pipeline)
        self.pgid = os.getpgid(0)
        self.proc = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(self.pgid)], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def disarm(self) -> None:
        """A clean exit: the server has stopped its children itself."""
        try:
            self.proc.stdin.write(b"exit")
            self.proc.stdin.close()
            self.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            pass


def serve(args) -> int:
    watchdog = GroupWatchdog()
    try:
        return _serve(args)
    finally:
        watchdog.disarm()


def _serve(args) -> int:
    from pytriton.triton import Triton, TritonConfig

    os.environ.update({k: v for k, v in server_env().items() if k == "LD_LIBRARY_PATH"})
    config = TritonConfig(http_address=args.host, http_port=args.http_port, grpc_address=args.host,
                          grpc_port=args.grpc_port, allow_metrics=False, log_verbose=0)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with Triton(config=config) as triton:
        names = [bind_model(triton, m, p, args.threads) for m in args.models for p in args.payloads]
        triton.run()
        if not wait_models_ready(f"http://{args.host}:{args.http_port}", names, timeout_s=120.0):
            print("robot-compress serve: models did not become ready within 120 s", file=sys.stderr, flush=True)
            return 1
        print(f"robot-compress serve: ready on http://{args.host}:{args.http_port} and grpc {args.host}:"
              f"{args.grpc_port}; models: {', '.join(names)}", flush=True)
        stop.wait(args.max_lifetime_s if args.max_lifetime_s > 0 else None)
    print("robot-compress serve: stopped", flush=True)
    return 0


def wait_models_ready(url: str, names, timeout_s: float, alive=lambda: True) -> bool:
    """Poll the standard KServe v2 endpoints until the server and every named model report ready."""
    import urllib.error
    import urllib.request

    paths = ["/v2/health/ready"] + [f"/v2/models/{n}/ready" for n in names]
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and alive():
        try:
            if all(urllib.request.urlopen(url + p, timeout=1.0).status == 200 for p in paths):
                return True
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    return False


def served_names(models, payloads) -> list[str]:
    from robot_compress.runtime.engine import read_metadata

    return [served_name(read_metadata(m).model_id, p) for m in models for p in payloads]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EdgeServerProcess:
    """`robot-compress serve` as a child process for tests and benchmarks: start, wait ready, kill, restart.

    Bounded: it is started with --max-lifetime-s, and stop() kills it if SIGTERM is not enough.
    """

    def __init__(self, models, payloads=("jpeg", "raw"), http_port: int | None = None, grpc_port: int | None = None,
                 max_lifetime_s: float = 600.0, log_path=None):
        self.models = [Path(m) for m in models]
        self.payloads = list(payloads)
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.max_lifetime_s = max_lifetime_s
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen | None = None
        self.started_s = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, ready_timeout_s: float = 120.0) -> EdgeServerProcess:
        py = edge_python()
        if py is None:
            raise RuntimeError(f"edge venv not found at {EDGE_VENV}; run `make edge-venv`")
        argv = [str(py), "-m", "robot_compress.tools.serve", "--http-port", str(self.http_port),
                "--grpc-port", str(self.grpc_port), "--payloads", ",".join(self.payloads),
                "--max-lifetime-s", str(self.max_lifetime_s)]
        for m in self.models:
            argv += ["--model", str(m)]
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, env=server_env(), stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        if log is not subprocess.DEVNULL:
            log.close()
        self.wait_ready(ready_timeout_s)
        self.started_s = time.monotonic() - t0
        return self

    def wait_ready(self, timeout_s: float) -> None:
        names = served_names(self.models, self.payloads)
        if wait_models_ready(self.url, names, timeout_s, alive=lambda: self.proc.poll() is None):
            return
        if self.proc.poll() is not None:
            raise RuntimeError(f"edge server exited with code {self.proc.returncode} (log: {self.log_path})")
        self.stop()
        raise RuntimeError(f"edge server not ready on {self.url} within {timeout_s:.0f} s (log: {self.log_path})")

    def kill(self) -> None:
        """Crash it: SIGKILL the whole process group (tritonserver and its backend stubs too)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc:  # stragglers of the group (backend stubs) must not outlive the test
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


if __name__ == "__main__":
    sys.exit(run("serve", sys.argv[1:]))
