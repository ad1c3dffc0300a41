"""KServe v2 client: against the real Triton server on loopback, and against servers that lie."""
from __future__ import annotations

import numpy as np
import pytest
from edge_fixtures import TEACHER_HW, start_server, teacher_and_student

from robot_compress.runtime import failover
from robot_compress.runtime.edge_client import (
    EdgeClient,
    EdgeConnectionError,
    EdgeError,
    EdgeResponseError,
    EdgeServerError,
    EdgeTimeout,
)
from robot_compress.runtime.engine import Engine, read_metadata
from robot_compress.tools.faultproxy import GARBAGE_KINDS, FaultProxy, MisbehavingServer
from robot_compress.tools.serve import free_port


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("edge")
    teacher, student = teacher_and_student(tmp)
    server = start_server([teacher], tmp, payloads=("raw", "jpeg", "float"))
    yield server, teacher, student
    server.stop()


def frame(h=120, w=160, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("payload", ["raw", "float", "jpeg"])
def test_real_server_answers_like_the_local_engine(served, payload):
    server, teacher, _ = served
    client = EdgeClient(server.url, "teacher_seg", read_metadata(teacher), payload=payload)
    assert client.model_ready()
    big = client.infer(frame(), timeout_s=5.0)  # resized on the client, mask resized back
    assert big.source == "edge" and big.model_id == "teacher_seg"
    assert big.mask.shape == (120, 160) and big.mask.dtype == np.uint8
    # at the teacher's own size nothing is resampled: the edge mask equals the teacher run locally
    rgb = frame(*TEACHER_HW, seed=3)
    got = client.infer(rgb, timeout_s=5.0).mask
    want = Engine(teacher).infer(rgb).mask
    agree = float((want == got).mean())
    assert agree > (0.999 if payload != "jpeg" else 0.3), agree  # JPEG is lossy on noise
    client.close()


def test_connection_is_reused_across_requests(served):
    server, teacher, _ = served
    client = EdgeClient(server.url, "teacher_seg", read_metadata(teacher))
    for i in range(10):
        client.infer(frame(seed=i), timeout_s=5.0)
    assert client.connections_opened == 1


def test_unknown_model_is_not_ready_and_describe_fails_clearly(served):
    server, teacher, _ = served
    client = EdgeClient(server.url, "no_such_model", read_metadata(teacher))
    assert not client.model_ready()  # the server is up (it answers 404 for the model, named below)
    with pytest.raises(EdgeServerError, match="no_such_model"):
        client.infer(frame(), timeout_s=2.0)


def test_class_count_mismatch_with_local_contract_is_rejected(served, tmp_path):
    from robot_compress.tools.synthetic_models import make_model

    server, _, _ = served
    other = read_metadata(make_model(tmp_path / "five.onnx", labels=list("abcde"), input_size=(8, 8)))
    client = EdgeClient(server.url, "teacher_seg", other)
    with pytest.raises(EdgeResponseError, match="class id"):
        for i in range(5):  # random weights: some frame's mask uses a class id >= 5
            client.infer(frame(seed=i), timeout_s=5.0)


def test_nothing_listening_is_a_connect_error():
    client = EdgeClient(f"http://127.0.0.1:{free_port()}", "m", _seg_meta())
    with pytest.raises(EdgeConnectionError) as info:
        client.infer(frame(), timeout_s=1.0)
    assert info.value.kind == failover.CONNECT
    assert not client.model_ready(0.2)


def test_blackhole_times_out_within_the_given_deadline():
    import time

    with MisbehavingServer("m", TEACHER_HW, 11, kind="valid") as upstream, FaultProxy(upstream.port) as proxy:
        proxy.blackhole()
        client = EdgeClient(proxy.url, "m", _seg_meta())
        t0 = time.monotonic()
        with pytest.raises(EdgeTimeout) as info:
            client.infer(frame(), timeout_s=0.3)
        assert time.monotonic() - t0 < 2.0
        assert info.value.kind == failover.TIMEOUT


# What each kind of garbage must be reported as: an HTTP error status is the server's (server_error); an answer
# that is not a valid result, however it is broken, is invalid. None of them is a connect failure.
GARBAGE_ERRORS = {
    "not_http": EdgeResponseError,      # bytes that are no HTTP status line
    "bad_json": EdgeResponseError,      # inference header that is not JSON
    "wrong_shape": EdgeResponseError,   # mask of another size than the served model's
    "wrong_dtype": EdgeResponseError,   # FP32 where the mask is UINT8
    "bad_class": EdgeResponseError,     # class id beyond the local model's labels
    "truncated": EdgeResponseError,     # binary sizes that do not add up to the body
    "no_output": EdgeResponseError,     # no mask output at all
    "http_500": EdgeServerError,
}
KIND_OF = {EdgeResponseError: failover.INVALID, EdgeServerError: failover.SERVER}


def test_every_garbage_kind_has_its_expected_error():
    assert set(GARBAGE_ERRORS) == set(GARBAGE_KINDS)


@pytest.mark.parametrize("kind", GARBAGE_KINDS)
def test_garbage_responses_raise_their_error_kind_and_never_become_results(kind):
    expected = GARBAGE_ERRORS[kind]
    with MisbehavingServer("m", TEACHER_HW, 11, kind=kind) as server:
        client = EdgeClient(server.url, "m", _seg_meta())
        with pytest.raises(EdgeError) as info:
            client.infer(frame(), timeout_s=2.0)
        assert type(info.value) is expected, f"{kind}: {info.value!r}"
        assert info.value.kind == KIND_OF[expected]
        assert server.requests >= 1


def test_valid_look_alike_answer_is_accepted():
    """The control for the garbage cases: the same server with a well-formed answer gives a result."""
    with MisbehavingServer("m", TEACHER_HW, 11, kind="valid") as server:
        result = EdgeClient(server.url, "m", _seg_meta()).infer(frame(), timeout_s=2.0)
        assert result.model_id == "bogus" and int(result.mask.max()) == 0


def test_bad_url_and_payload_are_rejected():
    with pytest.raises(ValueError, match="edge_url"):
        EdgeClient("ftp://x", "m", _seg_meta())
    with pytest.raises(ValueError, match="payload"):
        EdgeClient("http://127.0.0.1:1", "m", _seg_meta(), payload="png")


def _seg_meta():
    from robot_compress.runtime.metadata import ModelMetadata
    from robot_compress.tools.synthetic_models import CAMVID_LABELS

    return ModelMetadata("segmentation", tuple(CAMVID_LABELS), (48, 64), "RGB", (0.5,) * 3, (0.25,) * 3, {}, "student")


class SlowMetadataServer:
    """Answers model metadata after `delay_s` and counts how often it was asked."""

    def __init__(self, delay_s: float):
        import json
        import threading
        import time
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        outer = self
        self.metadata_requests = 0
        h, w = TEACHER_HW
        body = json.dumps({"name": "m", "inputs": [{"name": "image", "datatype": "UINT8", "shape": [h, w, 3]}],
                           "outputs": [{"name": "mask", "datatype": "UINT8", "shape": [h, w]}]}).encode()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.metadata_requests += 1
                time.sleep(delay_s)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self._server.shutdown()
        self._server.server_close()


def test_concurrent_first_requests_share_one_metadata_fetch():
    """Pool threads start on the first frames together; the description cache is filled once, under a lock."""
    from concurrent.futures import ThreadPoolExecutor

    server = SlowMetadataServer(delay_s=0.3)
    try:
        client = EdgeClient(server.url, "m", _seg_meta())
        with ThreadPoolExecutor(4) as pool:
            described = list(pool.map(lambda _: client.describe(timeout_s=5.0), range(4)))
        assert server.metadata_requests == 1
        assert all(d is described[0] for d in described) and described[0].input_hw == TEACHER_HW
    finally:
        server.close()
