"""KServe v2 / Open Inference Protocol client for the edge server (HTTP/1.1 keep-alive, binary tensor extension).

Standard library only (http.client): no gRPC stack on the robot. Measured against tritonclient's gRPC and
HTTP clients, and JPEG bytes against raw uint8 and a preprocessed float tensor (all resized on the robot to
the teacher's input size): docs/EDGE.md has the numbers and the reasons for HTTP + JPEG by default.

Every failure is an `EdgeError` whose `kind` is a failover outcome (timeout, connect, invalid,
server_error), so the offload processor can report it to the policy without guessing. A response that does
not fit the contract (shape, dtype, class count, mask values, byte counts) raises `EdgeResponseError`; it
never becomes a result.

Detection (docs/DETECTION.md): the edge answers its K final detections as num_detections INT32 [1] = K and
boxes FP32 [M, 4], scores FP32 [M], class_ids INT32 [M] whose first K rows count (M fixed per served model;
PyTriton cannot send zero-size tensors), boxes in pixels of the image it was sent, which is the frame resized to
the served model's input size. The client checks them (finite boxes inside that image, class ids in range,
scores in [0, 1], K at most the local model's max_detections and M) and scales the boxes to the frame.
"""
from __future__ import annotations

import dataclasses
import http.client
import json
import queue
import struct
import threading
import time
from urllib.parse import urlsplit

import numpy as np

from robot_compress.runtime import detection, failover
from robot_compress.runtime.edge_protocol import INPUT_NAME, PAYLOADS, served_name
from robot_compress.runtime.engine import result_from_logits, result_from_mask
from robot_compress.runtime.metadata import ModelMetadata
from robot_compress.runtime.results import InferenceResult

_HEADER_LEN = "Inference-Header-Content-Length"
# a served output kind that travels as several tensors
_OUTPUTS = {"detections": ("num_detections", "boxes", "scores", "class_ids")}


class EdgeError(RuntimeError):
    kind = failover.CONNECT


class EdgeTimeout(EdgeError):
    kind = failover.TIMEOUT


class EdgeConnectionError(EdgeError):
    kind = failover.CONNECT


class EdgeResponseError(EdgeError):
    """The server answered something that is not a valid result."""

    kind = failover.INVALID


class EdgeServerError(EdgeError):
    kind = failover.SERVER


@dataclasses.dataclass(frozen=True)
class ServedModel:
    """What the server says about the model, checked against the local contract once."""

    name: str
    input_hw: tuple[int, int]
    output: str  # "mask", "logits" or "detections"


class EdgeClient:
    """One edge model behind one base URL. Thread-safe: each request takes a pooled keep-alive connection, and
    the caches (served-model description, metadata per model id, counters) change only under a lock."""

    def __init__(self, url: str, model: str, meta: ModelMetadata, payload: str = "raw",
                 connect_timeout_s: float = 0.5, pool_size: int = 4, top_k: int = 5):
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"edge_url must look like http://HOST:PORT, got {url!r}")
        if payload not in PAYLOADS:
            raise ValueError(f"payload must be one of {PAYLOADS}, got {payload!r}")
        if not model:
            raise ValueError("edge model name must not be empty")
        self.host, self.port = parts.hostname, parts.port or 80
        self.url = f"http://{self.host}:{self.port}"
        self.model = model
        self.meta = meta
        self.payload = payload
        self.served_name = served_name(model, payload)
        self.connect_timeout_s = float(connect_timeout_s)
        self.top_k = int(top_k)  # labels per classification result, like the local Engine's
        self._pool: queue.LifoQueue = queue.LifoQueue(maxsize=pool_size)
        self._lock = threading.Lock()           # guards the caches and counters below (pool threads share them)
        self._describe_lock = threading.Lock()  # one metadata fetch at a time, so concurrent first frames share it
        self._served: ServedModel | None = None
        self._meta_by_id: dict[str, ModelMetadata] = {}
        self._connections_opened = 0

    @property
    def connections_opened(self) -> int:
        with self._lock:
            return self._connections_opened

    # ---- readiness --------------------------------------------------------------------------------
    def model_ready(self, timeout_s: float = 0.5) -> bool:
        """The served model answers ready (which also means the server is up and reachable)."""
        return self._get_status(f"/v2/models/{self.served_name}/ready", timeout_s) == 200

    def describe(self, timeout_s: float = 1.0) -> ServedModel:
        """Fetch and check the served model's metadata against the local contract (cached once valid)."""
        with self._lock:
            if self._served is not None:
                return self._served
        if not self._describe_lock.acquire(timeout=max(timeout_s, 0.0)):
            raise EdgeTimeout(f"{self.url}: model metadata still being fetched after {timeout_s * 1000:.0f} ms")
        try:
            with self._lock:
                if self._served is not None:  # another thread fetched it while this one waited
                    return self._served
            served = self._fetch_description(timeout_s)
            with self._lock:
                self._served = served
            return served
        finally:
            self._describe_lock.release()

    def _fetch_description(self, timeout_s: float) -> ServedModel:
        status, _, body = self._request("GET", f"/v2/models/{self.served_name}", None, {}, timeout_s)
        if status != 200:
            raise EdgeServerError(f"edge model {self.served_name!r} metadata: HTTP {status} {body[:200]!r}")
        try:
            info = json.loads(body)
            inputs = {t["name"]: t for t in info["inputs"]}
            outputs = {t["name"]: t for t in info["outputs"]}
        except (ValueError, KeyError, TypeError) as exc:
            raise EdgeResponseError(f"edge model metadata is not KServe v2 JSON: {exc}") from None
        if self.meta.task == "detection":
            return self._describe_detection(inputs, outputs, timeout_s)
        want_out = "mask" if self.meta.task == "segmentation" else "logits"
        if want_out not in outputs:
            raise EdgeResponseError(
                f"edge model {self.served_name!r} has outputs {sorted(outputs)}, expected {want_out!r} for task "
                f"{self.meta.task!r}")
        if want_out == "logits" and list(outputs["logits"].get("shape", [])) != [self.meta.num_classes]:
            raise EdgeResponseError(
                f"edge model {self.served_name!r} returns {outputs['logits'].get('shape')} logits, local model has "
                f"{self.meta.num_classes} classes")
        def jpeg_hw():  # the size follows the raw twin's convention, the teacher's input size from its mask output
            oshape = list(outputs[want_out].get("shape", []))
            return (int(oshape[0]), int(oshape[1])) if want_out == "mask" else tuple(self.meta.input_size)

        return ServedModel(self.served_name, self._served_input_hw(inputs, jpeg_hw), want_out)

    def _served_input_hw(self, inputs: dict, jpeg_hw) -> tuple[int, int]:
        """The served model's input size from its payload input's shape; a jpeg input carries none: `jpeg_hw()`."""
        in_name = INPUT_NAME[self.payload]
        if in_name not in inputs:
            raise EdgeResponseError(f"edge model {self.served_name!r} has no input {in_name!r}: {sorted(inputs)}")
        shape = list(inputs[in_name].get("shape", []))
        if self.payload == "raw" and len(shape) == 3:
            return (int(shape[0]), int(shape[1]))
        if self.payload == "float" and len(shape) == 4:
            return (int(shape[2]), int(shape[3]))
        return jpeg_hw()

    def _describe_detection(self, inputs: dict, outputs: dict, timeout_s: float) -> ServedModel:
        want = {"num_detections": ("INT32", 1), "boxes": ("FP32", 2), "scores": ("FP32", 1),
                "class_ids": ("INT32", 1)}
        missing = sorted(set(want) - set(outputs))
        if missing:
            raise EdgeResponseError(
                f"edge model {self.served_name!r} has outputs {sorted(outputs)}, expected {sorted(want)} for task "
                "'detection'")
        for name, (dtype, rank) in want.items():
            spec = outputs[name]
            shape = list(spec.get("shape", []))
            if spec.get("datatype", dtype) != dtype or len(shape) != rank:
                raise EdgeResponseError(
                    f"edge model {self.served_name!r} output {name!r} is {spec.get('datatype')} {shape}, expected "
                    f"{dtype} of rank {rank}")
        # jpeg carries no size: the raw twin's input tells the teacher's input size, else the local one's
        hw = self._served_input_hw(inputs, lambda: self._raw_twin_hw(timeout_s) or tuple(self.meta.input_size))
        return ServedModel(self.served_name, hw, "detections")

    def _raw_twin_hw(self, timeout_s: float) -> tuple[int, int] | None:
        try:
            status, _, body = self._request("GET", f"/v2/models/{served_name(self.model, 'raw')}", None, {},
                                            timeout_s)
            if status != 200:
                return None
            shape = {t["name"]: t for t in json.loads(body)["inputs"]}[INPUT_NAME["raw"]]["shape"]
            return (int(shape[0]), int(shape[1])) if len(shape) == 3 else None
        except EdgeError:
            raise
        except (ValueError, KeyError, TypeError, IndexError):
            return None

    # ---- inference --------------------------------------------------------------------------------
    def infer(self, rgb: np.ndarray, timeout_s: float) -> InferenceResult:
        """One frame -> one validated edge result, or an EdgeError. `timeout_s` is the remaining deadline."""
        t0 = time.perf_counter()
        end = time.monotonic() + timeout_s
        served = self.describe(timeout_s)
        header, blob = self._encode(rgb, served)
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise EdgeTimeout("frame deadline passed before the request was sent")
        headers = {"Content-Type": "application/octet-stream", _HEADER_LEN: str(len(header))}
        status, resp_headers, body = self._request(
            "POST", f"/v2/models/{served.name}/infer", header + blob, headers, remaining)
        if status != 200:
            raise EdgeServerError(f"edge inference: HTTP {status}: {body[:200]!r}")
        out, model_id = self._decode(resp_headers, body, served)
        meta = self._meta_for(model_id)
        if served.output == "detections":
            boxes, scores, class_ids = out
            frame_hw = tuple(rgb.shape[:2])
            dets = detection.to_detections(detection.scale_boxes(boxes, served.input_hw, frame_hw), scores,
                                           class_ids, meta.labels)
            result = InferenceResult(meta.task, meta.model_id, "edge", detections=dets, image_size=frame_hw)
        elif served.output == "mask":
            result = result_from_mask(meta, out, rgb.shape[:2], source="edge")
        else:
            result = result_from_logits(meta, out[None, :], rgb.shape[:2], source="edge", k=self.top_k)
        result.latency_ms = (time.perf_counter() - t0) * 1000.0
        return result

    def _encode(self, rgb: np.ndarray, served: ServedModel) -> tuple[bytes, bytes]:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image of shape (H, W, 3), got {rgb.dtype} {rgb.shape}")
        h, w = served.input_hw
        img = rgb
        if img.shape[:2] != (h, w):
            import cv2

            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        if self.payload == "raw":
            blob, name, dtype, shape = np.ascontiguousarray(img).tobytes(), "image", "UINT8", [h, w, 3]
        elif self.payload == "jpeg":
            from robot_compress.runtime.imaging import encode_compressed

            jpg = encode_compressed(img, "jpeg", quality=90)
            blob, name, dtype, shape = struct.pack("<I", len(jpg)) + jpg, "jpeg", "BYTES", [1]
        else:
            std = np.asarray(self.meta.std, np.float32).reshape(3, 1, 1)
            mean = np.asarray(self.meta.mean, np.float32).reshape(3, 1, 1)
            chw = (img.transpose(2, 0, 1).astype(np.float32) / 255.0 - mean) / std
            blob, name, dtype, shape = np.ascontiguousarray(chw[None], np.float32).tobytes(), "tensor", "FP32", \
                [1, 3, h, w]
        request = {
            "inputs": [{"name": name, "datatype": dtype, "shape": shape,
                        "parameters": {"binary_data_size": len(blob)}}],
            "outputs": [{"name": out, "parameters": {"binary_data": True}}
                        for out in (*_OUTPUTS.get(served.output, (served.output,)), "model_id")],
        }
        return json.dumps(request, separators=(",", ":")).encode(), blob

    def _decode(self, headers: dict, body: bytes, served: ServedModel) -> tuple[np.ndarray, str]:
        try:
            json_len = int(headers.get(_HEADER_LEN.lower(), len(body)))
            if not 0 < json_len <= len(body):
                raise ValueError(f"inference header length {json_len} outside a {len(body)}-byte body")
            info = json.loads(body[:json_len])
            outputs = info["outputs"]
            if not isinstance(outputs, list):
                raise ValueError("'outputs' is not a list")
            offset, arrays = json_len, {}
            for out in outputs:
                size = int(out.get("parameters", {}).get("binary_data_size", -1))
                if size < 0:
                    raise ValueError(f"output {out.get('name')!r} is not binary")
                arrays[out["name"]] = (out, body[offset:offset + size])
                offset += size
            if offset != len(body):
                raise ValueError(
                    f"binary sizes add up to {offset - json_len} bytes, body carries {len(body) - json_len}")
            if served.output == "detections":
                value = self._check_detections(arrays, served)
            elif served.output not in arrays:
                raise ValueError(f"no {served.output!r} output in {sorted(arrays)}")
            else:
                spec, raw = arrays[served.output]
                value = self._check_tensor(spec, raw, served)
            model_id = self.model
            if "model_id" in arrays:
                mid = arrays["model_id"][1]
                (n,) = struct.unpack_from("<I", mid)
                model_id = mid[4:4 + n].decode("utf-8")
            return value, model_id
        except EdgeResponseError:
            raise
        except (ValueError, KeyError, TypeError, IndexError, struct.error, UnicodeDecodeError) as exc:
            raise EdgeResponseError(f"malformed edge response: {exc}") from None

    def _check_tensor(self, spec: dict, raw: bytes, served: ServedModel) -> np.ndarray:
        c = self.meta.num_classes
        shape = [int(v) for v in spec.get("shape", [])]
        if served.output == "mask":
            want_dtype, want_shape = "UINT8", list(served.input_hw)
        else:
            want_dtype, want_shape = "FP32", [c]
        if spec.get("datatype") != want_dtype or shape != want_shape:
            raise EdgeResponseError(
                f"edge {served.output} is {spec.get('datatype')} {shape}, expected {want_dtype} {want_shape}")
        arr = np.frombuffer(raw, np.uint8 if want_dtype == "UINT8" else "<f4")
        if arr.size != int(np.prod(want_shape)):
            raise EdgeResponseError(f"edge {served.output} carries {arr.size} values for shape {want_shape}")
        arr = arr.reshape(want_shape)
        if served.output == "mask" and arr.size and int(arr.max()) >= c:
            raise EdgeResponseError(f"edge mask has class id {int(arr.max())}, model has {c} classes")
        if served.output == "logits" and not np.isfinite(arr).all():
            raise EdgeResponseError("edge logits contain NaN or inf")
        return arr

    def _check_detections(self, arrays: dict, served: ServedModel):
        """The first num_detections rows of boxes [M, 4] FP32, scores [M] FP32, class_ids [M] INT32, valid per
        the contract, highest score first."""
        want = {"num_detections": ("INT32", "<i4", 1), "boxes": ("FP32", "<f4", 4), "scores": ("FP32", "<f4", None),
                "class_ids": ("INT32", "<i4", None)}
        missing = [name for name in want if name not in arrays]
        if missing:
            raise EdgeResponseError(f"edge detection answer lacks {missing}; it has {sorted(arrays)}")
        got = {}
        for name, (dtype, np_dtype, width) in want.items():
            spec, raw = arrays[name]
            shape = [int(v) for v in spec.get("shape", [])]
            if name == "num_detections":
                ok_shape = shape == [1]
            else:
                ok_shape = len(shape) == (2 if width else 1) and (width is None or shape[1] == width)
            if spec.get("datatype") != dtype or not ok_shape:
                expect = {"num_detections": "[1]", "boxes": "[M, 4]"}.get(name, "[M]")
                raise EdgeResponseError(f"edge {name} is {spec.get('datatype')} {shape}, expected {dtype} {expect}")
            arr = np.frombuffer(raw, np_dtype)
            if arr.size != int(np.prod(shape)):
                raise EdgeResponseError(f"edge {name} carries {arr.size} values for shape {shape}")
            got[name] = arr.reshape(shape)
        rows = {got[n].shape[0] for n in ("boxes", "scores", "class_ids")}
        if len(rows) != 1:
            raise EdgeResponseError(f"edge detection tensors disagree on their rows: boxes {got['boxes'].shape[0]}, "
                                    f"scores {got['scores'].shape[0]}, class ids {got['class_ids'].shape[0]}")
        k, m = int(got["num_detections"][0]), rows.pop()
        limit = self.meta.detection.max_detections
        if not 0 <= k <= min(m, limit):
            raise EdgeResponseError(f"edge sent num_detections {k}, allowed 0..{min(m, limit)} (at most "
                                    f"{limit} per the model, {m} rows sent)")
        boxes, scores, class_ids = got["boxes"][:k], got["scores"][:k], got["class_ids"][:k]
        if k == 0:
            return boxes, scores, class_ids
        h, w = served.input_hw
        tol = 1e-3
        if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
            raise EdgeResponseError("edge detections contain NaN or inf")
        if (boxes[:, 0::2].min() < -tol or boxes[:, 0::2].max() > w + tol or boxes[:, 1::2].min() < -tol
                or boxes[:, 1::2].max() > h + tol):
            raise EdgeResponseError(f"edge boxes leave the {h}x{w} image they were computed on")
        if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
            raise EdgeResponseError("edge boxes are not x1, y1, x2, y2 with x2 >= x1 and y2 >= y1")
        if scores.min() < 0.0 or scores.max() > 1.0:
            raise EdgeResponseError(f"edge scores outside [0, 1]: {scores.min():.4g}..{scores.max():.4g}")
        c = self.meta.num_classes
        if class_ids.min() < 0 or class_ids.max() >= c:
            raise EdgeResponseError(f"edge class id {int(class_ids.max() if class_ids.max() >= c else class_ids.min())}"
                                    f" outside 0..{c - 1}")
        order = np.argsort(-scores, kind="stable")  # highest first, as the contract's results are
        return boxes[order], scores[order], class_ids[order]

    def _meta_for(self, model_id: str) -> ModelMetadata:
        with self._lock:
            meta = self._meta_by_id.get(model_id)
            if meta is None:
                meta = dataclasses.replace(self.meta, model_id=model_id)
                self._meta_by_id[model_id] = meta
            return meta

    # ---- transport --------------------------------------------------------------------------------
    def _get_status(self, path: str, timeout_s: float) -> int | None:
        try:
            return self._request("GET", path, None, {}, timeout_s)[0]
        except EdgeError:
            return None

    def _request(self, method: str, path: str, body, headers: dict, timeout_s: float):
        """Send on a pooled connection; one retry on a fresh one if a reused connection turns out closed."""
        end = time.monotonic() + timeout_s
        for attempt in (0, 1):
            conn, reused = self._take(min(self.connect_timeout_s, max(end - time.monotonic(), 1e-3)))
            try:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("deadline passed")
                if conn.sock is None:
                    conn.timeout = min(self.connect_timeout_s, remaining)
                    conn.connect()
                    with self._lock:
                        self._connections_opened += 1
                conn.sock.settimeout(remaining)
                conn.request(method, path, body=body, headers=headers)
                conn.sock.settimeout(max(end - time.monotonic(), 1e-3))
                resp = conn.getresponse()
                data = resp.read()
                if time.monotonic() > end:
                    raise TimeoutError("answer arrived after the deadline")
                resp_headers = {k.lower(): v for k, v in resp.getheaders()}
                self._give(conn, resp)
                return resp.status, resp_headers, data
            except TimeoutError as exc:
                conn.close()
                raise EdgeTimeout(f"{self.url}{path}: no answer within {timeout_s * 1000:.0f} ms ({exc})") from None
            except (http.client.BadStatusLine, http.client.LineTooLong, http.client.HTTPException) as exc:
                conn.close()
                retry = isinstance(exc, http.client.RemoteDisconnected) and reused and attempt == 0
                if retry:
                    continue
                if isinstance(exc, (http.client.RemoteDisconnected, http.client.IncompleteRead)):
                    raise EdgeConnectionError(f"{self.url}{path}: connection closed ({exc!r})") from None
                raise EdgeResponseError(f"{self.url}{path}: not an HTTP answer ({exc!r})") from None
            except OSError as exc:
                conn.close()
                if reused and attempt == 0 and isinstance(exc, (ConnectionResetError, BrokenPipeError)):
                    continue
                raise EdgeConnectionError(f"{self.url}{path}: {exc.__class__.__name__}: {exc}") from None
        raise EdgeConnectionError(f"{self.url}{path}: connection closed twice")  # pragma: no cover

    def _take(self, connect_timeout: float):
        try:
            return self._pool.get_nowait(), True
        except queue.Empty:
            return http.client.HTTPConnection(self.host, self.port, timeout=connect_timeout), False

    def _give(self, conn, resp) -> None:
        if resp.will_close:
            conn.close()
            return
        try:
            self._pool.put_nowait(conn)
        except queue.Full:
            conn.close()

    def close(self) -> None:
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                return
