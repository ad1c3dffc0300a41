"""Fault injection for the edge link, owned by tests and benchmarks: loopback only, bounded, self-stopping.

`FaultProxy` sits between client and server (127.0.0.1) and is steered by plain method calls:
  passthrough()            forward everything
  link_down()              refuse/reset: new connections and live ones get a TCP RST
  blackhole()              accept and swallow requests, never answer
  latency(ms, jitter_ms)   delay each request by ms +- jitter
  stalls(p, stall_s)       hold a fraction p of requests for stall_s
  bandwidth(bytes_per_s)   cap throughput both ways
  flap(period_s)           alternate link_down / passthrough every period, starting down
It stops on close(), on leaving its `with` block, and after max_lifetime_s whatever happens.

`MisbehavingServer` is a KServe v2 look-alike whose model metadata is valid but whose inference answers
are garbage of a chosen kind, or valid but slow — for the "server lies / is slow" cases that a real
server will not produce on demand.
"""
from __future__ import annotations

import json
import random
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PASS, DOWN, BLACKHOLE = "pass", "down", "blackhole"


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1", max_lifetime_s: float = 300.0,
                 seed: int = 0):
        self.target = (target_host, int(target_port))
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._mode = PASS
        self._latency_s = self._jitter_s = 0.0
        self._stall_p = self._stall_s = 0.0
        self._bytes_per_s = 0.0
        self._flap_period_s = 0.0
        self._flap_t0 = 0.0
        self._closed = threading.Event()
        self._socks: set[socket.socket] = set()
        self.connections = 0      # accepted client connections
        self.requests = 0         # client->server chunks seen
        self.stalled = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._threads = [threading.Thread(target=self._accept_loop, daemon=True, name="faultproxy-accept")]
        self._deadline = time.monotonic() + max_lifetime_s
        self._threads.append(threading.Thread(target=self._lifetime, daemon=True, name="faultproxy-lifetime"))
        for t in self._threads:
            t.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- control ----------------------------------------------------------------------------------
    def passthrough(self):
        with self._lock:
            self._mode, self._latency_s, self._jitter_s = PASS, 0.0, 0.0
            self._stall_p = self._bytes_per_s = self._flap_period_s = 0.0
        return self

    def link_down(self):
        with self._lock:
            self._mode, self._flap_period_s = DOWN, 0.0
        self._reset_all()
        return self

    def blackhole(self):
        with self._lock:
            self._mode, self._flap_period_s = BLACKHOLE, 0.0
        return self

    def latency(self, ms: float, jitter_ms: float = 0.0):
        with self._lock:
            self._latency_s, self._jitter_s = ms / 1000.0, jitter_ms / 1000.0
        return self

    def stalls(self, probability: float, stall_s: float = 1.0):
        with self._lock:
            self._stall_p, self._stall_s = float(probability), float(stall_s)
        return self

    def bandwidth(self, bytes_per_s: float):
        with self._lock:
            self._bytes_per_s = float(bytes_per_s)
        return self

    def flap(self, period_s: float):
        with self._lock:
            self._mode, self._flap_period_s, self._flap_t0 = PASS, float(period_s), time.monotonic()
        return self

    def mode(self) -> str:
        with self._lock:
            if self._flap_period_s > 0:
                phase = int((time.monotonic() - self._flap_t0) / self._flap_period_s)
                return DOWN if phase % 2 == 0 else PASS  # starts with the link going down
            return self._mode

    # ---- plumbing ---------------------------------------------------------------------------------
    def _accept_loop(self):
        self._listener.settimeout(0.1)
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle/delayed-ACK stalls added
            mode = self.mode()
            if mode == DOWN:
                _reset(client)
                continue
            upstream = None
            if mode == PASS:
                try:
                    upstream = socket.create_connection(self.target, timeout=1.0)
                    upstream.settimeout(None)
                    upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError:
                    _reset(client)  # server gone: the client sees the link refuse, as it would
                    continue
            with self._lock:
                self._socks.add(client)
                if upstream is not None:
                    self._socks.add(upstream)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            if upstream is not None:
                threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket | None, is_request: bool):
        try:
            while not self._closed.is_set():
                data = src.recv(65536)
                if not data:
                    break
                mode = self.mode()
                if mode == DOWN:
                    break
                if mode == BLACKHOLE or dst is None:
                    continue  # swallowed: the client waits for an answer that never comes
                if is_request:
                    self.requests += 1
                    self._delay_request()
                self._throttle(len(data))
                if self.mode() == DOWN:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                if s is not None:
                    _reset(s)
                    with self._lock:
                        self._socks.discard(s)

    def _delay_request(self):
        with self._lock:
            delay = self._latency_s + (self._rng.uniform(-self._jitter_s, self._jitter_s) if self._jitter_s else 0.0)
            if self._stall_p and self._rng.random() < self._stall_p:
                delay += self._stall_s
                self.stalled += 1
        if delay > 0:
            self._closed.wait(delay)

    def _throttle(self, nbytes: int):
        with self._lock:
            bps = self._bytes_per_s
        if bps > 0:
            self._closed.wait(nbytes / bps)

    def _reset_all(self):
        with self._lock:
            socks = list(self._socks)
            self._socks.clear()
        for s in socks:
            _reset(s)

    def _lifetime(self):
        while not self._closed.wait(0.2):
            if time.monotonic() > self._deadline:
                self.close()

    def close(self):
        self._closed.set()
        try:
            self._listener.close()
        except OSError:
            pass
        self._reset_all()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _reset(sock: socket.socket):
    """Close with RST (SO_LINGER 0): the peer sees 'connection reset', as on a dropped link."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


GARBAGE_KINDS = ("not_http", "bad_json", "wrong_shape", "wrong_dtype", "bad_class", "truncated", "http_500",
                 "no_output")


class MisbehavingServer:
    """A KServe v2 look-alike for one segmentation model: valid metadata, then `kind` answers.

    kind: one of GARBAGE_KINDS, or "valid" (a correct all-zeros mask) — combine with delay_s for a slow server.
    """

    def __init__(self, model: str, input_hw: tuple[int, int], num_classes: int, kind: str = "bad_json",
                 delay_s: float = 0.0, max_lifetime_s: float = 120.0):
        if kind not in GARBAGE_KINDS + ("valid",):
            raise ValueError(f"kind must be one of {GARBAGE_KINDS + ('valid',)}, got {kind!r}")
        self.model, self.hw, self.num_classes = model, tuple(input_hw), int(num_classes)
        self.kind, self.delay_s = kind, float(delay_s)
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path.endswith("/ready"):
                    return self._send(200, b"", "text/plain")
                h, w = outer.hw
                meta = {"name": outer.model, "versions": ["1"], "platform": "python",
                        "inputs": [{"name": "image", "datatype": "UINT8", "shape": [h, w, 3]}],
                        "outputs": [{"name": "mask", "datatype": "UINT8", "shape": [h, w]},
                                    {"name": "model_id", "datatype": "BYTES", "shape": [1]}]}
                self._send(200, json.dumps(meta).encode(), "application/json")

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.requests += 1
                if outer.delay_s:
                    time.sleep(outer.delay_s)
                if outer.kind == "not_http":
                    self.wfile.write(b"\x00\xffgarbage that is not HTTP\r\n\r\n")
                    self.close_connection = True
                    return
                if outer.kind == "http_500":
                    return self._send(500, b'{"error": "internal"}', "application/json")
                self._send_infer(*outer._infer_body())

            def _send_infer(self, header: bytes, blob: bytes):
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Inference-Header-Content-Length", str(len(header)))
                self.send_header("Content-Length", str(len(header) + len(blob)))
                self.end_headers()
                self.wfile.write(header + blob)

            def _send(self, code, body, ctype):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        self._timer = threading.Timer(max_lifetime_s, self.close)
        self._timer.daemon = True
        self._timer.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _infer_body(self) -> tuple[bytes, bytes]:
        h, w = self.hw
        mask_dtype, mask_shape = "UINT8", [h, w]
        mask = bytes(h * w)
        if self.kind == "wrong_shape":
            mask_shape, mask = [h // 2, w], bytes((h // 2) * w)
        elif self.kind == "wrong_dtype":
            mask_dtype, mask = "FP32", bytes(4 * h * w)
        elif self.kind == "bad_class":
            mask = bytes([self.num_classes]) * (h * w)
        mid = struct.pack("<I", 5) + b"bogus"
        outputs = [{"name": "mask", "datatype": mask_dtype, "shape": mask_shape,
                    "parameters": {"binary_data_size": len(mask)}},
                   {"name": "model_id", "datatype": "BYTES", "shape": [1],
                    "parameters": {"binary_data_size": len(mid)}}]
        if self.kind == "no_output":
            outputs, mask, mid = [], b"", b""
        header = json.dumps({"model_name": self.model, "outputs": outputs}).encode()
        if self.kind == "bad_json":
            header = b'{"outputs": [ oops'
        blob = mask + mid
        if self.kind == "truncated":
            blob = blob[: len(blob) // 2]
        return header, blob

    def close(self):
        self._timer.cancel()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
