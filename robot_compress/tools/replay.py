"""`robot-compress replay BAG`: publish a bag's camera topics with the recorded timing and record what the
perception node answers into an output bag.

Frames go out as recorded (header stamp and frame_id untouched), paced by bag time divided by `rate`.
Publishing starts only once every camera topic has a subscriber (counts, not sleeps), and after the last
frame the recorder waits until one result per published frame has arrived or the outputs go quiet
(`drain_s`), so a replay is always bounded. The output bag holds the recorded topics, the source bag's
provenance/label topics (so `robot-compress score OUT` needs nothing else) and a replay_info record.
Its timestamps are on the source bag's timeline: receive time mapped back through `rate`.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from robot_compress.tools import bags

DEFAULT_MASK_TOPIC = "/perception/mask"
DEFAULT_RESULT_TOPIC = "/perception/result"
DEFAULT_DIAGNOSTICS_TOPIC = "/diagnostics"
REPLAY_INFO_TOPIC = "/robot_compress/replay_info"
DRAIN_CAP_FACTOR = 6
SIDE_TOPICS = (bags.INFO_TOPIC, *bags.LABEL_TOPICS)


class ReplayError(RuntimeError):
    """The replay cannot run as asked (no subscriber, bad option); the message says what to do."""


def default_record_topics(mask_topic=DEFAULT_MASK_TOPIC, result_topic=DEFAULT_RESULT_TOPIC,
                          diagnostics_topic=DEFAULT_DIAGNOSTICS_TOPIC) -> dict[str, str]:
    return {mask_topic: bags.IMAGE, result_topic: bags.STRING, diagnostics_topic: bags.DIAGNOSTICS}


@dataclass
class Record:
    topic: str
    msgtype: str
    recv_ns: int  # wall clock at receipt
    raw: bytes


@dataclass
class ReplayReport:
    bag: Path
    out_bag: Path | None
    published: list[tuple[str, int, str]] = field(default_factory=list)  # (topic, header stamp ns, frame_id)
    records: list[Record] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    drained: bool = False  # True when one result per published frame arrived

    @property
    def frames_published(self) -> int:
        return len(self.published)

    def messages(self, topic: str):
        """Recorded messages on one topic as rclpy objects, in arrival order."""
        return [bags.to_rclpy(r.raw, r.msgtype) for r in self.records if r.topic == topic]


def _parse_remap(items) -> dict[str, str]:
    out = {}
    for item in items or ():
        if ":=" not in item:
            raise ReplayError(f"bad remap {item!r}; expected FROM:=TO, e.g. /camera/image_raw:=/cam/image")
        src, dst = item.split(":=", 1)
        out[src] = dst
    return out


def replay(bag, out_bag=None, *, rate: float = 1.0, loops: int = 1, start_offset_s: float = 0.0,
           topics: list[str] | None = None, remap: dict[str, str] | None = None, clock: bool = False,
           record: dict[str, str] | None = None, expect_topic: str | None = DEFAULT_RESULT_TOPIC,
           wait_timeout_s: float = 20.0, drain_s: float = 5.0, qos_depth: int = 10, reliable: bool = True,
           storage: str = "sqlite3", overwrite: bool = False, on_frame: Callable[[int, int], None] | None = None,
           stop: threading.Event | None = None, prime: bool = True, log=print) -> ReplayReport:
    """Replay `bag` into the ROS graph; record `record` topics ({topic: msgtype}) into `out_bag` (optional).

    `on_frame(index, total)` runs before each frame is published (the demo drops the edge link from it);
    `stop` ends the replay early. `prime` holds the timeline after the first frame until its result is back
    (the node's warm-up must not cost frames). Returns what was published and recorded.
    """
    if rate <= 0:
        raise ReplayError(f"rate must be > 0, got {rate}")
    if loops < 1:
        raise ReplayError(f"loops must be >= 1, got {loops}")
    if start_offset_s < 0:
        raise ReplayError(f"start offset must be >= 0 s, got {start_offset_s}")
    remap = dict(remap or {})
    record = default_record_topics() if record is None else dict(record)
    if out_bag is not None and Path(out_bag).exists() and not overwrite:
        raise ReplayError(f"output bag {out_bag} already exists (remove it or pass --overwrite)")

    with bags.BagReader(bag) as reader:
        camera_topics = reader.require_image_topics(topics)
        start_ns = reader.start_ns + int(start_offset_s * 1e9)
        frames = [(t, mt, tn, raw) for t, mt, tn, raw in reader.messages(camera_topics) if tn >= start_ns]
        if not frames:
            raise ReplayError(f"no frames in {bag} after the start offset of {start_offset_s} s")
        side = [m for m in reader.messages([t for t in SIDE_TOPICS if t in reader.topics])]
        camera_types = {t: reader.topics[t].msgtype for t in camera_topics}
    unknown = [src for src in remap if src not in camera_types]
    if unknown:
        raise ReplayError(f"remap source(s) {', '.join(unknown)} are not camera topics of {bag} "
                          f"({', '.join(camera_types)})")

    report = ReplayReport(Path(bag), Path(out_bag) if out_bag else None)
    t0_bag = frames[0][2]
    period_ns = (frames[-1][2] - t0_bag) // max(len(frames) - 1, 1) if len(frames) > 1 else int(1e9 / 30)
    loop_span_ns = frames[-1][2] - t0_bag + period_ns
    wall_origin = _run_ros(report, frames, camera_types, remap, record, expect_topic, rate, loops, loop_span_ns,
                           clock, wait_timeout_s, drain_s, qos_depth, reliable, on_frame, stop, prime, log)
    report.counts = {t: sum(1 for r in report.records if r.topic == t) for t in record}
    if out_bag is not None:
        _write_output(report, side, t0_bag, wall_origin, rate, storage, overwrite,
                      dict(source_bag=str(bag), rate=rate, loops=loops, start_offset_s=start_offset_s,
                           camera_topics=[remap.get(t, t) for t in camera_types]))
    return report


def _run_ros(report, frames, camera_types, remap, record, expect_topic, rate, loops, loop_span_ns, clock,
             wait_timeout_s, drain_s, qos_depth, reliable, on_frame, stop, prime, log) -> int:
    """Publish the frames and record the outputs; returns the wall-clock origin (ns) of the timeline."""
    camera_qos, out_qos = _qos_profiles(qos_depth, reliable)
    lock = threading.Lock()
    with _RosSession() as ros:
        pubs = {t: ros.node.create_publisher(bags.rclpy_type(mt), remap.get(t, t), camera_qos)
                for t, mt in camera_types.items()}
        clock_pub = ros.node.create_publisher(bags.rclpy_type(bags.CLOCK), "/clock", 10) if clock else None
        subs = {t: ros.node.create_subscription(bags.rclpy_type(mt), t, _recorder(report, lock, t, mt), out_qos,
                                                raw=True)
                for t, mt in record.items()}
        ros.spin_in_background()
        _wait_for_graph(ros.node, pubs, subs, wait_timeout_s, stop, log)
        timeline = _Timeline(frames[0][2], rate, loop_span_ns)

        def first_result():  # the node's warm-up must not cost frames
            _wait_first_result(report, lock, expect_topic, wait_timeout_s, stop, log)

        _publish_frames(report, frames, loops, timeline, pubs, clock_pub, remap, on_frame, stop,
                        first_result if prime and expect_topic else None)
        report.drained = _drain(report, lock, expect_topic, drain_s, stop)
        report.wall_s = time.monotonic() - timeline.mono_origin
        return timeline.wall_origin


def _qos_profiles(depth: int, reliable: bool):
    """(camera publishers' QoS, recorder subscriptions' QoS)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    camera = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth), durability=DurabilityPolicy.VOLATILE,
                        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)
    out = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.VOLATILE)
    return camera, out


class _RosSession:
    """A private rclpy context with one node, spun by a background thread; everything torn down on exit."""

    def __enter__(self):
        import rclpy

        from robot_compress.tools.ros_env import apply_localhost_dds

        apply_localhost_dds()  # keeps an already chosen ROS_DOMAIN_ID
        self._rclpy = rclpy
        self.context = rclpy.Context()
        # No rclpy signal handlers: Ctrl-C must raise KeyboardInterrupt here so callers (the demo) clean up.
        rclpy.init(context=self.context, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
        self.node = self.executor = None
        self._stop_spin = threading.Event()
        try:
            self.node = rclpy.create_node("robot_compress_replay", context=self.context)
        except BaseException:
            self.__exit__()
            raise
        return self

    def spin_in_background(self) -> None:
        from rclpy.executors import SingleThreadedExecutor

        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        threading.Thread(target=_spin, args=(self.executor, self._stop_spin), daemon=True).start()

    def __exit__(self, *exc) -> None:
        self._stop_spin.set()
        if self.executor is not None:
            self.executor.shutdown(timeout_sec=1.0)
        if self.node is not None:
            self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)


def _recorder(report, lock, topic: str, msgtype: str):
    def callback(raw):
        with lock:
            report.records.append(Record(topic, msgtype, time.time_ns(), bytes(raw)))
    return callback


@dataclass
class _Timeline:
    """Bag time -> this process's clocks: a frame stamped t_ns goes out (t_ns - t0) / rate after the origin."""

    t0: int
    rate: float
    loop_span_ns: int
    wall_origin: int = 0
    mono_origin: float = 0.0

    def start(self) -> None:
        self.wall_origin, self.mono_origin = time.time_ns(), time.monotonic()

    def due(self, t_ns: int, shift: int) -> float:
        return self.mono_origin + (t_ns - self.t0 + shift) / 1e9 / self.rate

    def resume_after(self, t_ns: int) -> None:
        """Keep bag timing from frame `t_ns` on, starting now (after a wait)."""
        self.mono_origin = time.monotonic() - (t_ns - self.t0) / 1e9 / self.rate


def _publish_frames(report, frames, loops, timeline: _Timeline, pubs, clock_pub, remap, on_frame, stop,
                    after_first) -> None:
    """Every frame, `loops` times, at its bag time; loops re-stamp so every published frame has its own stamp.
    `after_first`: called once the first frame is out (and the timeline resumes after it)."""
    total, index = len(frames) * loops, 0
    timeline.start()
    for loop in range(loops):
        shift = loop * timeline.loop_span_ns
        for topic, msgtype, t_ns, raw in frames:
            if stop is not None and stop.is_set():
                raise KeyboardInterrupt
            delay = timeline.due(t_ns, shift) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if on_frame is not None:
                on_frame(index, total)
            msg = bags.to_rclpy(raw, msgtype)
            if shift:
                stamp = bags.stamp_to_ns(msg.header.stamp) + shift
                msg.header.stamp.sec, msg.header.stamp.nanosec = bags.ns_to_sec_nsec(stamp)
            if clock_pub is not None:
                clock_msg = bags.rclpy_type(bags.CLOCK)()
                clock_msg.clock.sec, clock_msg.clock.nanosec = bags.ns_to_sec_nsec(t_ns + shift)
                clock_pub.publish(clock_msg)
            pubs[topic].publish(msg)
            report.published.append((remap.get(topic, topic), bags.stamp_to_ns(msg.header.stamp),
                                     msg.header.frame_id))
            index += 1
            if index == 1 and after_first is not None:
                # The first frame pays the node's warm-up (lazy imports, first session run); a latest-frame-wins
                # node would drop the next frames meanwhile.
                after_first()
                timeline.resume_after(t_ns)


def _spin(executor, stop_spin):
    while not stop_spin.is_set():
        try:
            executor.spin_once(timeout_sec=0.05)
        except Exception:  # context shut down under us at the end of the replay
            return


def _wait_for_graph(node, pubs, subs, timeout_s, stop, log):
    """Block until every camera topic has a subscriber and every recorded topic a publisher (bounded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        no_subscriber = [p.topic_name for p in pubs.values() if p.get_subscription_count() < 1]
        no_publisher = [s.topic_name for s in subs.values() if s.get_publisher_count() < 1]
        if not no_subscriber and not no_publisher:
            return
        if stop is not None and stop.is_set():
            raise KeyboardInterrupt
        if time.monotonic() > deadline:
            if no_subscriber:
                raise ReplayError(f"no subscriber on {', '.join(no_subscriber)} after {timeout_s:.0f} s: is the "
                                  f"perception node running on this ROS_DOMAIN_ID with the same input topic?"
                                  + _type_mismatch_hint(node, pubs, no_subscriber))
            log(f"replay: warning: nothing publishes {', '.join(no_publisher)}; those topics stay empty")
            return
        time.sleep(0.02)  # polling the graph, not waiting for data


def _type_mismatch_hint(node, pubs, topics) -> str:
    """Name subscribers that exist but expect another message type (e.g. Image vs CompressedImage)."""
    published = {p.topic_name: p.msg_type for p in pubs.values()}
    hints = []
    for topic in topics:
        ours = f"{published[topic].__module__.split('.')[0]}/msg/{published[topic].__name__}"
        theirs = {info.topic_type for info in node.get_subscriptions_info_by_topic(topic)} - {ours}
        if theirs:
            hints.append(f"{topic} has subscribers of type {', '.join(sorted(theirs))} but the bag holds {ours} "
                         f"(perception_node: set compressed_input to match)")
    return (" " + "; ".join(hints)) if hints else ""


def _wait_first_result(report, lock, expect_topic, timeout_s, stop, log) -> None:
    key = report.published[0][1:]
    deadline = time.monotonic() + timeout_s
    scanned = 0
    while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
        with lock:
            new = report.records[scanned:]
        scanned += len(new)
        if any(r.topic == expect_topic and _result_key(r.raw) == key for r in new):
            return
        time.sleep(0.01)
    log(f"replay: warning: no result for the first frame on {expect_topic} within {timeout_s:.0f} s; going on")


def _drain(report, lock, expect_topic, drain_s, stop) -> bool:
    """Wait for the outputs: one `expect_topic` result per published frame (matched by stamp and frame_id,
    so other nodes on the domain do not count), or `drain_s` without a new result (periodic topics such
    as /diagnostics do not hold the replay open). Never longer than DRAIN_CAP_FACTOR * drain_s."""
    wanted = {(stamp, frame_id) for _, stamp, frame_id in report.published}
    answered: set = set()
    scanned = 0
    start = last_change = time.monotonic()
    while True:
        with lock:
            new = report.records[scanned:]
        scanned += len(new)
        for r in new:
            if expect_topic is None or r.topic == expect_topic:
                last_change = time.monotonic()
                if expect_topic is not None:
                    answered.add(_result_key(r.raw))
        if expect_topic and wanted <= answered:
            return True
        now = time.monotonic()
        if now - last_change > drain_s or now - start > DRAIN_CAP_FACTOR * drain_s:
            return False
        if stop is not None and stop.is_set():
            return False
        time.sleep(0.02)


def _result_key(raw: bytes):
    try:
        rec = json.loads(bags.to_rclpy(raw, bags.STRING).data)
        return rec["stamp"]["sec"] * 1_000_000_000 + rec["stamp"]["nanosec"], rec["frame_id"]
    except (ValueError, KeyError, TypeError):
        return None


def _write_output(report, side, t0_bag, wall_origin, rate, storage, overwrite, info):
    """Recorded messages on the source bag's timeline, plus provenance/labels and the replay record."""
    info = dict(info, frames_published=report.frames_published, drained=report.drained, counts=report.counts,
                published=[{"topic": t, "stamp_ns": s, "frame_id": f} for t, s, f in report.published])
    with bags.BagWriter(report.out_bag, storage, overwrite=overwrite) as out:
        out.write_string(REPLAY_INFO_TOPIC, json.dumps(info), t0_bag)
        for topic, msgtype, t_ns, raw in side:
            out.write_raw(topic, msgtype, raw, t_ns)
        for r in report.records:
            out.write_raw(r.topic, r.msgtype, r.raw, t0_bag + int((r.recv_ns - wall_origin) * rate))


def replay_info(out_bag) -> dict:
    """The replay record of an output bag ({} if it has none)."""
    with bags.BagReader(out_bag) as reader:
        for _, msgtype, _, raw in reader.messages([REPLAY_INFO_TOPIC]):
            return json.loads(reader.decode(raw, msgtype).data)
    return {}


def _parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("bag", help="rosbag2 bag directory (sqlite3 or mcap storage)")
    p.add_argument("-o", "--output", help="output bag for the recorded node outputs (default: none)")
    p.add_argument("--storage", choices=bags.STORAGES, default="sqlite3", help="storage of the output bag")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output bag")
    p.add_argument("--rate", type=float, default=1.0, help="playback rate factor (2 = twice as fast)")
    p.add_argument("--loop", type=int, default=1, help="play the bag this many times (stamps shifted per loop)")
    p.add_argument("--start", type=float, default=0.0, help="skip this many seconds from the bag's start")
    p.add_argument("--topic", action="append", help="camera topic to play (repeatable; default: all image topics)")
    p.add_argument("--remap", action="append", help="FROM:=TO topic remap for published topics (repeatable)")
    p.add_argument("--clock", action="store_true", help="also publish /clock (rosgraph_msgs/Clock) in bag time")
    p.add_argument("--mask-topic", default=DEFAULT_MASK_TOPIC)
    p.add_argument("--result-topic", default=DEFAULT_RESULT_TOPIC)
    p.add_argument("--diagnostics-topic", default=DEFAULT_DIAGNOSTICS_TOPIC)
    p.add_argument("--wait", type=float, default=20.0, help="seconds to wait for the node's subscription")
    p.add_argument("--drain", type=float, default=5.0, help="seconds of silence that end recording")
    p.add_argument("--no-prime", action="store_true",
                   help="do not hold the timeline until the first frame's result is back (node warm-up)")
    p.add_argument("--best-effort", action="store_true", help="publish best-effort instead of reliable")
    return p


def run(command: str, argv: list[str]) -> int:
    args = _parser(f"robot-compress {command}").parse_args(argv)
    try:
        record = default_record_topics(args.mask_topic, args.result_topic, args.diagnostics_topic)
        report = replay(args.bag, args.output, rate=args.rate, loops=args.loop, start_offset_s=args.start,
                        topics=args.topic, remap=_parse_remap(args.remap), clock=args.clock, record=record,
                        expect_topic=args.result_topic, wait_timeout_s=args.wait, drain_s=args.drain,
                        reliable=not args.best_effort, prime=not args.no_prime, storage=args.storage,
                        overwrite=args.overwrite,
                        log=lambda s: print(s, file=sys.stderr))
    except (bags.BagError, ReplayError) as exc:
        print(f"robot-compress {command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"robot-compress {command}: interrupted", file=sys.stderr)
        return 130
    print(f"published {report.frames_published} frames in {report.wall_s:.1f} s; recorded "
          + ", ".join(f"{t}: {n}" for t, n in report.counts.items()))
    if report.out_bag:
        print(f"output bag: {report.out_bag}")
    if not report.drained:
        print(f"note: fewer results on {args.result_topic} than frames published "
              f"({report.counts.get(args.result_topic, 0)}/{report.frames_published}); the node may drop frames "
              "(latest-frame-wins) when replayed faster than it infers", file=sys.stderr)
    return 0
