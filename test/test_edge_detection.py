"""Detection through the edge (docs/DETECTION.md): the real Triton server serves the synthetic detector and
answers the same detections as the local Engine; answers that do not fit the contract raise EdgeResponseError."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from edge_fixtures import start_server

from robot_compress.runtime import failover
from robot_compress.runtime.edge_client import EdgeClient, EdgeResponseError
from robot_compress.runtime.engine import Engine, read_metadata
from robot_compress.runtime.failover import FailoverConfig
from robot_compress.runtime.offload import OffloadProcessor
from robot_compress.tools.faultproxy import FaultProxy
from robot_compress.tools.synthetic_models import make_model

TEACHER_HW = (96, 128)  # 6 x 8 cells of 16 px
STUDENT_HW = (48, 64)
LABELS = ["bright", "red", "green"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("edge_det")
    teacher = make_model(tmp / "teacher.onnx", task="detection", labels=LABELS, input_size=TEACHER_HW,
                         model_id="teacher_det")
    student = make_model(tmp / "student.onnx", task="detection", labels=LABELS, input_size=STUDENT_HW,
                         model_id="student_det")
    server = start_server([teacher], tmp, payloads=("raw", "jpeg", "float"))
    yield server, teacher, student
    server.stop()


def painted(scale: int = 1) -> np.ndarray:
    """A dark frame with three painted cells of the teacher's grid (16 px cells, times `scale`)."""
    c = 16 * scale
    rgb = np.full((TEACHER_HW[0] * scale, TEACHER_HW[1] * scale, 3), 20, np.uint8)
    rgb[1 * c:2 * c, 2 * c:3 * c] = 255            # bright at row 1, col 2
    rgb[4 * c:5 * c, 5 * c:6 * c] = (230, 10, 10)  # red at row 4, col 5
    rgb[0:c, 7 * c:8 * c] = (0, 250, 0)            # green at row 0, col 7
    return rgb


def as_tuples(dets):
    return sorted((d.label, d.class_id, tuple(round(v, 3) for v in d.box)) for d in dets)


@pytest.mark.parametrize("payload", ["raw", "float", "jpeg"])
@pytest.mark.parametrize("scale", [1, 2])
def test_edge_answers_the_local_engines_detections(served, payload, scale):
    server, teacher, student = served
    client = EdgeClient(server.url, "teacher_det", read_metadata(student), payload=payload)
    assert client.model_ready()
    assert client.describe().input_hw == TEACHER_HW  # jpeg too: the size comes from the raw twin
    rgb = painted(scale)
    got = client.infer(rgb, timeout_s=10.0)
    want = Engine(teacher).infer(rgb)
    assert got.source == "edge" and got.model_id == "teacher_det" and got.task == "detection"
    assert got.image_size == rgb.shape[:2]
    assert len(want.detections) == 3
    assert as_tuples(got.detections) == as_tuples(want.detections)
    np.testing.assert_allclose([d.score for d in got.detections], [d.score for d in want.detections],
                               atol=1e-6 if payload != "jpeg" else 1e-2)
    assert [d.score for d in got.detections] == sorted((d.score for d in got.detections), reverse=True)
    out = json.loads(json.dumps(got.to_dict(1, 2, "cam")))
    assert out["image_size"] == list(rgb.shape[:2]) and len(out["detections"]) == 3
    client.close()


def test_a_frame_with_nothing_in_it_comes_back_empty(served):
    server, _, student = served
    client = EdgeClient(server.url, "teacher_det", read_metadata(student), payload="raw")
    dark = np.zeros((120, 160, 3), np.uint8)
    res = client.infer(dark, timeout_s=10.0)
    assert res.detections == [] and res.image_size == (120, 160)
    client.close()


class StillClock:
    """Stands still unless moved: every frame waits for its edge answer, no hedge wins by accident."""

    t = 1000.0

    def __call__(self):
        return self.t


def test_offload_answers_detections_from_the_edge_then_locally_when_the_link_drops(served):
    server, teacher, student = served
    engine = Engine(student)
    rgb = painted()
    rgb[64:96, 0:32] = 255  # one cell of the student's grid (32 frame px), four of the teacher's
    want_edge = as_tuples(Engine(teacher).infer(rgb).detections)
    want_local = as_tuples(engine.infer(rgb).detections)
    assert want_local and want_local != want_edge  # the student sees the frame on its own coarser grid
    clock = StillClock()
    with FaultProxy(server.http_port, max_lifetime_s=120) as proxy:
        proc = OffloadProcessor(engine, EdgeClient(proxy.url, "teacher_det", engine.meta, payload="jpeg"),
                                FailoverConfig(mode="auto", deadline_s=5.0, hedge_after_s=4.0, failure_threshold=2,
                                               recovery_probes=3, probe_interval_s=0.1),
                                clock=clock)
        log = []
        for i in range(12):
            if i == 6:
                proxy.link_down()
            res = proc.process(rgb, clock(), clock() + 5.0)
            log.append((res.source, as_tuples(res.detections), res.image_size))
            clock.t += 1 / 30
        proc.close()
    assert log[:6] == [("edge", want_edge, rgb.shape[:2])] * 6
    assert log[6:] == [("local", want_local, rgb.shape[:2])] * 6


# ---- a look-alike server that answers what it is told -----------------------------------------------------
VALID_BOXES = [[10.0, 10.0, 30.0, 30.0], [40.0, 20.0, 60.0, 50.0]]


def answer(kind: str):
    """The answer tensors as (name, datatype, shape, bytes) for one kind: 2 detections, padded to M = 4 rows."""
    boxes = np.array(VALID_BOXES + [[0, 0, 0, 0]] * 2, np.float32)
    scores = np.array([0.6, 0.9, 0, 0], np.float32)  # out of order on purpose: the client sorts
    ids = np.array([0, 1, 0, 0], np.int32)
    ids_dtype, count = "INT32", 2
    if kind == "class_out_of_range":
        ids[1] = 3
    elif kind == "score_above_one":
        scores[0] = 1.5
    elif kind == "nan_box":
        boxes[1, 2] = np.nan
    elif kind == "box_outside":
        boxes[1, 2] = 200.0  # the image sent is 128 wide
    elif kind == "inverted_box":
        boxes[0] = [30, 10, 10, 30]
    elif kind == "too_many":  # more than the local model's max_detections (100)
        boxes = np.tile(boxes[:1], (101, 1))
        scores, ids, count = np.full(101, 0.5, np.float32), np.zeros(101, np.int32), 101
    elif kind == "count_beyond_rows":
        count = 5
    elif kind == "count_mismatch":
        scores = scores[:3]
    elif kind == "wrong_dtype":
        ids, ids_dtype = ids.astype(np.float32), "FP32"
    elif kind == "padding_is_ignored":  # garbage in the rows past num_detections does not matter
        boxes[2:], scores[2:], ids[2:] = np.nan, 7.0, 99
    tensors = [("num_detections", "INT32", [1], np.array([count], np.int32).tobytes()),
               ("boxes", "FP32", list(boxes.shape), boxes.tobytes()),
               ("scores", "FP32", list(scores.shape), scores.tobytes()),
               ("class_ids", ids_dtype, list(ids.shape), ids.tobytes())]
    if kind == "missing_output":
        tensors = tensors[:3]
    return tensors


class DetectionLookalike:
    """KServe v2 look-alike of a served detection model (raw payload, 96 x 128 input)."""

    def __init__(self, kind: str, metadata_outputs=None):
        h, w = TEACHER_HW
        outputs = metadata_outputs or [{"name": "num_detections", "datatype": "INT32", "shape": [1]},
                                       {"name": "boxes", "datatype": "FP32", "shape": [4, 4]},
                                       {"name": "scores", "datatype": "FP32", "shape": [4]},
                                       {"name": "class_ids", "datatype": "INT32", "shape": [4]},
                                       {"name": "model_id", "datatype": "BYTES", "shape": [1]}]
        meta_body = json.dumps({"name": "m", "inputs": [{"name": "image", "datatype": "UINT8", "shape": [h, w, 3]}],
                                "outputs": outputs}).encode()
        tensors = answer(kind)
        header = json.dumps({"model_name": "m", "outputs": [
            {"name": n, "datatype": d, "shape": s, "parameters": {"binary_data_size": len(b)}}
            for n, d, s, b in tensors]}).encode()
        infer_body = header + b"".join(b for *_, b in tensors)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, body: bytes, extra=()):
                self.send_response(200)
                for k, v in extra:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._send(b"" if self.path.endswith("/ready") else meta_body)

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self._send(infer_body, [("Inference-Header-Content-Length", str(len(header)))])

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()


def local_meta(tmp_path):
    return read_metadata(make_model(tmp_path / "s.onnx", task="detection", labels=LABELS[:2],
                                    input_size=STUDENT_HW))


@pytest.mark.parametrize("kind", ["valid", "padding_is_ignored"])
def test_a_valid_lookalike_answer_is_scaled_to_the_frame_and_sorted(tmp_path, kind):
    with DetectionLookalike(kind) as server:
        res = EdgeClient(server.url, "m", local_meta(tmp_path)).infer(
            np.zeros((192, 256, 3), np.uint8), timeout_s=2.0)
    assert [(d.label, d.score, d.box) for d in res.detections] == [
        ("red", pytest.approx(0.9), (80.0, 40.0, 120.0, 100.0)),
        ("bright", pytest.approx(0.6), (20.0, 20.0, 60.0, 60.0))]


@pytest.mark.parametrize("kind, message", [
    ("class_out_of_range", "class id 3"),
    ("score_above_one", "scores outside"),
    ("nan_box", "NaN"),
    ("box_outside", "leave"),
    ("inverted_box", "x2 >= x1"),
    ("too_many", "at most 100"),
    ("count_beyond_rows", "num_detections 5"),
    ("count_mismatch", "disagree"),
    ("wrong_dtype", "class_ids is FP32"),
    ("missing_output", "lacks"),
])
def test_misfit_answers_raise_edge_response_error(tmp_path, kind, message):
    with DetectionLookalike(kind) as server:
        client = EdgeClient(server.url, "m", local_meta(tmp_path))
        with pytest.raises(EdgeResponseError, match=message) as info:
            client.infer(np.zeros((96, 128, 3), np.uint8), timeout_s=2.0)
    assert info.value.kind == failover.INVALID


def test_a_served_model_without_detection_outputs_is_rejected_on_describe(tmp_path):
    seg_outputs = [{"name": "mask", "datatype": "UINT8", "shape": [96, 128]}]
    with DetectionLookalike("valid", metadata_outputs=seg_outputs) as server:
        client = EdgeClient(server.url, "m", local_meta(tmp_path))
        with pytest.raises(EdgeResponseError, match="expected.*boxes"):
            client.infer(np.zeros((96, 128, 3), np.uint8), timeout_s=2.0)
