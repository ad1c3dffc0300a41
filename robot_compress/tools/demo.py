"""`make demo` / `python -m robot_compress.tools.demo`: real camera footage through the whole system.

`--task segmentation` (default) or `--task detection` (pedestrian boxes):
1. models: the shipped student (local) and teacher (edge) of the task from models/ (segmentation: the CamVid
   pair; detection: models/pennfudan_*.onnx), else tiny random models built on the fly (announced: their
   accuracy means nothing);
2. the demo bag, built on demand: segmentation: CamVid validation frames from ../shared (labelled, so outputs
   are scored); detection: the Penn-Fudan validation images from ../shared (box labels, scored as AP/AP50);
   else Debian opencv-doc's vtest.avi (real pedestrian video, unlabelled), else a generated numpy scene;
3. the edge server (Triton, `robot-compress serve`) behind the fault proxy, when .venv-edge exists;
4. perception_node started as launch starts it (`--ros-args --params-file`), mode auto (local without edge);
5. the bag replayed at camera rate; the edge link dropped for the middle third, then restored;
6. everything stopped (process groups, also on Ctrl-C/SIGTERM); a summary table (per answering source: frames,
   latency, accuracy when labelled; detection also boxes per frame), demo_output/ with the output bag,
   summary.json and timeline.png.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import yaml

from robot_compress import pennfudan
from robot_compress.paths import PACKAGE_ROOT
from robot_compress.tools import bags
from robot_compress.tools.bag_from_frames import (
    CAMVID_IGNORE,
    CAMVID_LABELS,
    camvid_from_zip,
    synthetic_pedestrians,
    synthetic_scene,
)
from robot_compress.tools.replay import default_record_topics, replay
from robot_compress.tools.ros_env import localhost_dds_env, pick_domain_id

CAMVID_ZIP = PACKAGE_ROOT.parent / "shared" / "data" / "camvid-trainval.zip"
PENNFUDAN_ZIP = PACKAGE_ROOT.parent / "shared" / "data" / "pennfudan-trainval.zip"
VTEST_CANDIDATES = ("/usr/share/doc/opencv-doc/examples/data/vtest.avi",
                    "/usr/share/opencv4/samples/data/vtest.avi", "/usr/share/doc/opencv-doc/examples/vtest.avi")
STUDENT_NAME = "camvid_lraspp_student.onnx"  # config/perception.yaml's default model_path
TEACHER_NAME = "camvid_teacher_fp16.onnx"  # the edge teacher (float16 weights: fits models/' 25 MB budget)
DETECTION_MODELS = "pennfudan_*.onnx"  # the toolkit's Penn-Fudan detectors: the smallest is the student
TASKS = ("segmentation", "detection")
SOURCES = {"segmentation": ("camvid", "vtest", "synthetic"), "detection": ("pennfudan", "vtest", "synthetic")}
INPUT_TOPIC, MASK_TOPIC, RESULT_TOPIC = "/camera/image_raw", "/perception/mask", "/perception/result"


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


class Interrupted(Exception):
    """SIGTERM arrived: leave through the same clean-up as Ctrl-C."""


def _on_sigterm(signum, frame):
    raise Interrupted()


# ---------------------------------------------------------------------------------------------- models


def locate_models(work: Path, task: str = "segmentation") -> tuple[Path, Path | None, str]:
    """(student for the node, teacher for the edge, how they were found)."""
    from robot_compress.runtime.engine import ModelLoadError, read_metadata

    found = []
    pattern = DETECTION_MODELS if task == "detection" else "*.onnx"
    for path in sorted((PACKAGE_ROOT / "models").glob(pattern)):
        try:
            meta = read_metadata(path)
        except ModelLoadError:
            continue
        if meta.task == task:
            found.append((path, meta))
    if found:
        by_size = sorted(found, key=lambda pm: pm[0].stat().st_size)
        student = next((pm for pm in found if pm[0].name == STUDENT_NAME), by_size[0])
        teachers = [pm for pm in by_size if pm[0] != student[0] and pm[1].labels == student[1].labels]
        named = [pm for pm in teachers if pm[0].name == TEACHER_NAME]
        teacher = (named or teachers)[-1][0] if teachers else None
        note = f"shipped models: student {student[0].name}" + (f", teacher {teacher.name}" if teacher else
                                                                 " (no separate teacher: edge serves the student)")
        return student[0], teacher or student[0], note
    return _synthetic_models(work, task)


def _synthetic_models(work: Path, task: str) -> tuple[Path, Path, str]:
    from robot_compress.tools.synthetic_models import make_model

    if task == "detection":
        kw = {"task": "detection", "labels": pennfudan.LABELS}
        student = make_model(work / "synthetic_det_student.onnx", input_size=(96, 128), seed=2,
                             model_id="synthetic_det_student", **kw)
        teacher = make_model(work / "synthetic_det_teacher.onnx", input_size=(192, 256), seed=1,
                             model_id="synthetic_det_teacher", **kw)
        return student, teacher, (f"no detection models ({DETECTION_MODELS}) in {PACKAGE_ROOT / 'models'}: "
                                  "SYNTHETIC colour-cell detectors built on the fly (a fixed grid of boxes that fire "
                                  "on bright cells; the pipeline is real, the accuracy numbers are meaningless)")
    student = make_model(work / "synthetic_student.onnx", input_size=(90, 120), seed=2, model_id="synthetic_student")
    teacher = make_model(work / "synthetic_teacher.onnx", input_size=(180, 240), seed=1, model_id="synthetic_teacher")
    return student, teacher, ("no segmentation models in models/: SYNTHETIC random-weight models built on the fly "
                              "(the pipeline is real, the accuracy numbers are meaningless)")


# ---------------------------------------------------------------------------------------------- footage


def find_vtest(allow_apt: bool) -> Path | None:
    for cand in VTEST_CANDIDATES:
        if Path(cand).is_file():
            return Path(cand)
    if allow_apt and os.geteuid() == 0 and shutil.which("apt-get"):
        say("vtest.avi not found; trying `apt-get install opencv-doc` (Debian package, ~95 MB, 150 s limit)")
        try:
            subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "opencv-doc"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=150, check=False)
        except subprocess.TimeoutExpired:
            return None
        return next((Path(c) for c in VTEST_CANDIDATES if Path(c).is_file()), None)
    return None


def _ping_pong(items: list, n: int) -> list:
    """n items cycling forwards then backwards, so a short clip plays on without a jump."""
    cycle = items + items[-2:0:-1] if len(items) > 2 else items
    return [cycle[i % len(cycle)] for i in range(n)]


def build_demo_bag(path: Path, source: str, frames: int, rate_hz: float, allow_apt: bool,
                   task: str = "segmentation") -> dict:
    """Write the demo bag; returns its provenance. `source` is auto or one of SOURCES[task]."""
    if source not in ("auto", *SOURCES[task]):
        raise bags.BagError(f"--source {source} has no {task} labels or frames; for --task {task} choose auto, "
                            + ", ".join(SOURCES[task]))
    if task == "detection":
        return _build_detection_bag(path, source, frames, rate_hz, allow_apt)
    if source in ("auto", "camvid") and CAMVID_ZIP.is_file():
        pairs = list(camvid_from_zip(CAMVID_ZIP, "val", max_frames=min(frames, 101)))
        pairs = _ping_pong(pairs, frames)
        info = {"kind": "camvid-val", "source": str(CAMVID_ZIP), "class_names": CAMVID_LABELS, "image_format": "rgb8",
                "ignore_index": CAMVID_IGNORE, "note": "CamVid (Brostow et al. 2008), SegNet split, val frames"}
        bags.write_frames(path, [f for f, _ in pairs], rate_hz=rate_hz, frame_id="camera", fmt="rgb8",
                          label_masks=[lab for _, lab in pairs], info=info, overwrite=True)
        return info
    if source == "camvid":
        raise bags.BagError(f"CamVid not found at {CAMVID_ZIP}")
    vtest = find_vtest(allow_apt) if source in ("auto", "vtest") else None
    if vtest is not None:
        return _build_vtest_bag(path, vtest, frames, rate_hz)
    if source == "vtest":
        raise bags.BagError("vtest.avi not found (install Debian's opencv-doc)")
    pairs = list(synthetic_scene(frames, 360, 480))
    info = {"kind": "synthetic", "source": "robot_compress.tools.bag_from_frames.synthetic_scene",
            "image_format": "rgb8", "class_names": CAMVID_LABELS, "ignore_index": CAMVID_IGNORE,
            "note": "generated numpy road scene (no real footage available); labels exact by construction"}
    bags.write_frames(path, [f for f, _ in pairs], rate_hz=rate_hz, frame_id="camera", fmt="rgb8",
                      label_masks=[lab for _, lab in pairs], info=info, overwrite=True)
    return info


def _build_vtest_bag(path: Path, vtest: Path, frames: int, rate_hz: float) -> dict:
    from robot_compress.tools.bag_from_frames import video_frames

    it, fps = video_frames(vtest, max_frames=frames)
    clip = list(it)
    info = {"kind": "video", "source": str(vtest), "video_fps": fps, "image_format": "jpeg",
            "note": "Debian opencv-doc examples/data/vtest.avi (pedestrians); no labels: not scored"}
    bags.write_frames(path, _ping_pong(clip, frames), rate_hz=rate_hz, frame_id="camera", fmt="jpeg",
                      info=info, overwrite=True)
    return info


def _build_detection_bag(path: Path, source: str, frames: int, rate_hz: float, allow_apt: bool) -> dict:
    """Penn-Fudan validation images with their boxes (each at its own size, as the toolkit scores them), else
    vtest.avi (unlabelled), else a generated scene with exact boxes."""
    if source in ("auto", "pennfudan") and PENNFUDAN_ZIP.is_file():
        items = _ping_pong(list(pennfudan.samples(PENNFUDAN_ZIP, "val")), frames)
        info = {"kind": "pennfudan-val", "source": str(PENNFUDAN_ZIP), "class_names": pennfudan.LABELS,
                "image_format": "rgb8", "note": f"Penn-Fudan pedestrians (Wang et al. 2007), the toolkit's "
                f"validation images (every {pennfudan.VAL_EVERY}th by name), boxes scored as COCO AP/AP50"}
        bags.write_frames(path, [rgb for _, rgb, _ in items], rate_hz=rate_hz, frame_id="camera", fmt="rgb8",
                          box_labels=[objects for _, _, objects in items], info=info, overwrite=True)
        return info
    if source == "pennfudan":
        raise bags.BagError(f"Penn-Fudan not found at {PENNFUDAN_ZIP}")
    vtest = find_vtest(allow_apt) if source in ("auto", "vtest") else None
    if vtest is not None:
        return _build_vtest_bag(path, vtest, frames, rate_hz)
    if source == "vtest":
        raise bags.BagError("vtest.avi not found (install Debian's opencv-doc)")
    items = list(synthetic_pedestrians(frames, 360, 480))
    info = {"kind": "synthetic", "source": "robot_compress.tools.bag_from_frames.synthetic_pedestrians",
            "image_format": "rgb8", "class_names": pennfudan.LABELS,
            "note": "generated numpy street with walking figures (no real footage available); boxes exact"}
    bags.write_frames(path, [rgb for rgb, _ in items], rate_hz=rate_hz, frame_id="camera", fmt="rgb8",
                      box_labels=[objects for _, objects in items], info=info, overwrite=True)
    return info


# ---------------------------------------------------------------------------------------------- processes


def write_node_params(path: Path, overrides: dict) -> Path:
    """config/perception.yaml (what launch loads) with the demo's values on top."""
    base = yaml.safe_load((PACKAGE_ROOT / "config" / "perception.yaml").read_text())
    params = base["/**"]["ros__parameters"]
    params.update(overrides)
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    return path


def start_node(params_file: Path, model: Path, env: dict, log_path: Path) -> subprocess.Popen:
    """perception_node the way launch/perception.launch.xml starts it: params file, then model_path."""
    argv = [sys.executable, "-u", "-m", "robot_compress.ros.perception_node", "--ros-args",
            "-r", "__node:=perception_node", "--params-file", str(params_file), "-p", f"model_path:={model}"]
    log = open(log_path, "wb")
    try:
        return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # own process group: nothing outlives the demo
    finally:
        log.close()


def stop_process_group(proc: subprocess.Popen | None, timeout: float = 15.0) -> int | None:
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group
    except (ProcessLookupError, PermissionError):
        pass
    return proc.returncode


def _timed(what: str, fn, *args) -> None:
    t0 = time.monotonic()
    fn(*args)
    say(f"{what} ({time.monotonic() - t0:.1f} s)")


def stop_server(server, grace_s: float = 5.0) -> None:
    """SIGTERM the server's group, SIGKILL it after `grace_s` (Triton can take 20 s to wind down and the
    demo has nothing left to ask it), then let EdgeServerProcess reap stragglers."""
    proc = server.proc
    if proc is not None and proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            server.kill()
        except ProcessLookupError:
            pass
    server.stop()


# ---------------------------------------------------------------------------------------------- analysis


def analyse(report, events: dict, rate_hz: float) -> dict:
    """Per-frame rows (frame index, source, latency) and the summary numbers (detection results: also the boxes
    per answering source)."""
    from robot_compress.ros.diagnostics import values_dict

    index_of = {(s, f): i for i, (_, s, f) in enumerate(report.published)}
    rows, boxes = {}, {}
    for msg in report.messages(RESULT_TOPIC):
        rec = json.loads(msg.data)
        key = (rec["stamp"]["sec"] * 1_000_000_000 + rec["stamp"]["nanosec"], rec["frame_id"])
        if key in index_of and index_of[key] not in rows:
            rows[index_of[key]] = (rec["source"], float(rec["latency_ms"]))
            if "detections" in rec:
                boxes[index_of[key]] = len(rec["detections"])
    ordered = [(i, *rows[i]) for i in sorted(rows)]
    sources = [s for _, s, _ in ordered]
    switches = sum(1 for a, b in zip(sources, sources[1:], strict=False) if a != b)
    diags = [values_dict(m) for m in report.messages("/diagnostics")]
    diags = [d for d in diags if d.get("input_topic") == INPUT_TOPIC]
    last = diags[-1] if diags else {}
    summary = {"frames_published": report.frames_published, "results": len(ordered),
               "missing": report.frames_published - len(ordered),
               "per_source": {s: sources.count(s) for s in sorted(set(sources))},
               "source_switches": switches, "node_transitions": last.get("processor.transitions"),
               "node_frames_in": last.get("frames_in"), "node_dropped": last.get("dropped"),
               "node_bad_frames": last.get("bad_frames"),
               # Frames neither answered nor counted by the node (latest-frame-wins drops, bad frames):
               # must be 0, or a frame vanished silently.
               "unaccounted": report.frames_published - len(ordered) - int(last.get("dropped") or 0)
               - int(last.get("bad_frames") or 0),
               "events": events, "rate_hz": rate_hz}
    if boxes:
        per = {}
        for i, src, _ in ordered:
            d = per.setdefault(src, {"frames": 0, "boxes": 0})
            d["frames"] += 1
            d["boxes"] += boxes.get(i, 0)
        summary["boxes_per_source"] = {src: dict(d, per_frame=d["boxes"] / d["frames"]) for src, d in per.items()}
    for s in ["all"] + sorted(set(sources)):
        lat = [v for _, src, v in ordered if s == "all" or src == s]
        if lat:
            summary[f"latency_ms_{s}"] = {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
                                          "max": float(max(lat))}
    return {"rows": ordered, "summary": summary}


def plot_timeline(rows, events: dict, path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib is not installed (pip install -r requirements/dev.txt): no timeline.png")
        return False
    fig, ax = plt.subplots(figsize=(10, 4))
    colours = {"edge": "tab:blue", "local": "tab:orange"}
    for src in sorted({s for _, s, _ in rows}):
        pts = [(i, v) for i, s, v in rows if s == src]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=8, label=src, color=colours.get(src, "tab:gray"))
    if "link_down_frame" in events:
        end = events.get("link_up_frame", max((i for i, _, _ in rows), default=0))
        ax.axvspan(events["link_down_frame"], end, color="tab:red", alpha=0.12, label="edge link down")
    ax.set_xlabel("frame")
    ax.set_ylabel("latency (ms, receipt -> result)")
    ax.set_title(title)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def format_summary(s: dict, score=None) -> str:
    lines = ["", "=" * 64, "robot_compress demo summary", "=" * 64,
             f"{'frames published':<28}{s['frames_published']}",
             f"{'results (one per frame)':<28}{s['results']}  (missing {s['missing']}: node dropped "
             f"{s.get('node_dropped')} under latest-frame-wins, unaccounted {s['unaccounted']})"]
    for src, n in s["per_source"].items():
        lines.append(f"{'  from ' + src:<28}{n}")
    for key in [k for k in s if k.startswith("latency_ms_")]:
        v = s[key]
        lines.append(f"{'latency ' + key[11:] + ' p50/p95':<28}{v['p50']:.1f} / {v['p95']:.1f} ms (max {v['max']:.1f})")
    lines.append(f"{'switch-overs (sources)':<28}{s['source_switches']}  (policy transitions: "
                 f"{s.get('node_transitions')})")
    for src, v in s.get("boxes_per_source", {}).items():
        lines.append(f"{'boxes from ' + src:<28}{v['boxes']} in {v['frames']} frames ({v['per_frame']:.2f} per frame)")
    if score is not None and score.task == "detection":
        lines.append(f"{'accuracy vs labels':<28}AP50 {score.overall['ap50']:.4f}, AP {score.overall['ap']:.4f} "
                     f"over {score.frames_scored} frames")
        for src, v in score.by_source.items():  # what the edge teacher buys, what the fallback costs
            lines.append(f"{'  frames from ' + src:<28}AP50 {v['ap50']:.4f}, AP {v['ap']:.4f} over "
                         f"{v['frames']} frames")
    elif score is not None:
        lines.append(f"{'accuracy vs labels':<28}pixel acc {score.overall['pixel_acc']:.4f}, mIoU "
                     f"{score.overall['miou']:.4f} over {score.frames_scored} frames")
        for src, v in score.by_source.items():  # what the edge teacher buys, what the fallback costs
            lines.append(f"{'  frames from ' + src:<28}pixel acc {v['pixel_acc']:.4f}, mIoU {v['miou']:.4f} over "
                         f"{v['frames']} frames")
    else:
        lines.append(f"{'accuracy vs labels':<28}n/a (footage has no labels)")
    lines.append("=" * 64)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- main


def run_demo(args) -> int:
    t_start = time.monotonic()
    out = _fresh_output_dir(Path(args.out))
    student, teacher, note = locate_models(out / "work", args.task)
    say(f"task: {args.task}; models: {note}")
    bag = out / "work" / "demo_input_bag"
    info = build_demo_bag(bag, args.source, args.frames, args.rate_hz, allow_apt=not args.no_apt, task=args.task)
    say(f"footage: {info['kind']} from {info['source']} -> {args.frames} frames at {args.rate_hz:g} Hz "
        f"({info['note']})")
    use_edge = _edge_wanted(args)
    env, domain = _confine_dds()
    events: dict = {}
    with ExitStack() as stack:
        overrides = _node_overrides(info)
        proxy = _start_edge(stack, teacher, out, args, overrides) if use_edge else None
        params = write_node_params(out / "perception_params.yaml", overrides)
        node = start_node(params, student, env, out / "node.log")
        stack.callback(_timed, "perception_node stopped", stop_process_group, node)
        say(f"perception_node started as launch would (--params-file {params}), mode {overrides['mode']}, "
            f"ROS_DOMAIN_ID={domain}")
        say(f"replaying {bag.name} at camera rate ...")
        report = replay(bag, out / "output_bag", rate=1.0, record=default_record_topics(MASK_TOPIC, RESULT_TOPIC),
                        expect_topic=RESULT_TOPIC, wait_timeout_s=90, drain_s=5,
                        on_frame=_link_drop_script(node, proxy, events, args.frames, out), log=lambda s: say(s))
        say(f"perception_node exited with code {stop_process_group(node)}")
    say("all demo processes stopped")
    summary = _report(out, report, events, info, args.rate_hz, use_edge)
    summary.update(task=args.task, models=note, footage=info, edge=use_edge,
                   wall_s=round(time.monotonic() - t_start, 1))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    say(f"wrote {out / 'output_bag'} (replay output bag), {out / 'summary.json'}"
        + (f", {out / 'timeline.png'}" if (out / "timeline.png").is_file() else "") + f" in {summary['wall_s']} s")
    if not use_edge:
        say("NOTE: this run was LOCAL-ONLY; with .venv-edge installed the demo adds the edge server and a link drop")
    return 0 if summary["results"] > 0 else 1


def _fresh_output_dir(out: Path) -> Path:
    """`out` without a previous run's results (its work/ dir and bag cache stay)."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("output_bag", "timeline.png", "summary.json"):
        p = out / stale
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    (out / "work").mkdir(exist_ok=True)
    return out


def _edge_wanted(args) -> bool:
    from robot_compress.tools.serve import edge_python

    if not args.no_edge and edge_python() is not None:
        return True
    why = "--no-edge" if args.no_edge else ".venv-edge is missing (make edge-venv)"
    say(f"EDGE DISABLED ({why}): the node runs local-only; no link drop is shown")
    return False


def _confine_dds() -> tuple[dict, int]:
    """A private ROS_DOMAIN_ID and localhost-only DDS, for the node we start and the replay in this process."""
    domain = pick_domain_id()
    env = localhost_dds_env(domain)
    os.environ.update({k: env[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_DEFAULT_PROFILES_FILE",
                                           "RMW_IMPLEMENTATION", "ROS_DOMAIN_ID")})
    return env, domain


def _node_overrides(info: dict) -> dict:
    """The demo's values on top of config/perception.yaml (mode local until an edge is started)."""
    return {"input_topic": INPUT_TOPIC, "result_topic": RESULT_TOPIC.lstrip("/"),
            "mask_topic": MASK_TOPIC.lstrip("/"), "mode": "local", "threads": 1,
            "qos_reliability": "reliable", "qos_depth": 10, "diagnostics_period_s": 0.5,
            # The node must subscribe the message type the bag holds (Image vs CompressedImage).
            "compressed_input": info["image_format"] == "jpeg"}


def _start_edge(stack: ExitStack, teacher: Path, out: Path, args, overrides: dict):
    """The edge server behind the fault proxy, both stopped by `stack`; the node's overrides switch to auto.
    Returns the proxy (the demo drops the link through it)."""
    from robot_compress.runtime.engine import read_metadata
    from robot_compress.tools.faultproxy import FaultProxy
    from robot_compress.tools.serve import EdgeServerProcess

    say(f"starting the edge server (Triton) with {teacher.name} ...")
    t0 = time.monotonic()
    server = EdgeServerProcess([teacher], log_path=out / "edge_server.log", max_lifetime_s=900)
    stack.callback(_timed, "edge server stopped", stop_server, server)
    server.start(ready_timeout_s=120)
    proxy = stack.enter_context(FaultProxy(server.http_port, max_lifetime_s=900))
    say(f"edge server ready on {server.url} in {time.monotonic() - t0:.1f} s; node talks to it through "
        f"the fault proxy {proxy.url}")
    overrides.update(mode="auto", edge_url=proxy.url, edge_model=read_metadata(teacher).model_id,
                     frame_deadline_ms=args.deadline_ms, hedge_after_ms=min(args.hedge_ms, args.deadline_ms),
                     failure_threshold=3, recovery_probes=3, probe_interval_ms=100.0, probe_backoff_max_ms=500.0)
    return proxy


def _link_drop_script(node: subprocess.Popen, proxy, events: dict, frames: int, out: Path):
    """The replay's per-frame hook: stop if the node died; drop the edge link for the middle third."""
    down_at, up_at = frames // 3, 2 * frames // 3

    def on_frame(index, total):
        if node.poll() is not None:
            raise RuntimeError(f"perception_node exited with code {node.returncode}; see {out / 'node.log'}")
        if proxy is None:
            return
        if index == down_at:
            proxy.link_down()
            events["link_down_frame"] = index
            say(f"frame {index}: edge link DOWN (fault proxy resets connections)")
        elif index == up_at:
            proxy.passthrough()
            events["link_up_frame"] = index
            say(f"frame {index}: edge link RESTORED")

    return on_frame


def _report(out: Path, report, events: dict, info: dict, rate_hz: float, use_edge: bool) -> dict:
    """Summary numbers, accuracy against the labels (when the footage has them), timeline.png; prints the table."""
    result = analyse(report, events, rate_hz)
    summary = result["summary"]
    score = None
    if "class_names" in info:
        from robot_compress.tools.score import score as score_bag

        score = score_bag(out / "output_bag", mask_topic=MASK_TOPIC)
        keys = ("ap", "ap50") if score.task == "detection" else ("pixel_acc", "miou")
        summary["accuracy"] = {**{k: score.overall[k] for k in keys}, "frames_scored": score.frames_scored,
                               "by_source": score.by_source}
    title = f"{info['kind']} footage, {'edge + local failover' if use_edge else 'local only (no edge)'}"
    plot_timeline(result["rows"], events, out / "timeline.png", title)
    print(format_summary(summary, score))
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m robot_compress.tools.demo", description=__doc__.split("\n\n")[0])
    # The edge here is this machine's CPU, not a GPU: the DeepLabV3 teacher takes ~100-150 ms per 360x480 frame on
    # one core, so the demo plays the camera at 5 Hz and gives the edge 300 ms before the local model steps in.
    p.add_argument("--frames", type=int, default=150, help="frames in the demo bag (default 150 = 30 s at 5 Hz)")
    p.add_argument("--rate-hz", type=float, default=5.0, help="camera rate of the demo bag")
    p.add_argument("--task", choices=TASKS, default="segmentation",
                   help="segmentation (CamVid models) or detection (Penn-Fudan pedestrian detectors)")
    p.add_argument("--source", choices=("auto", "camvid", "pennfudan", "vtest", "synthetic"), default="auto",
                   help="footage: auto = the labelled set of the task (CamVid val / Penn-Fudan val) from ../shared, "
                   "else vtest.avi, else a generated scene")
    p.add_argument("--out", default=str(PACKAGE_ROOT / "demo_output"))
    p.add_argument("--no-edge", action="store_true", help="local only: no edge server, no link drop")
    p.add_argument("--no-apt", action="store_true", help="never try apt-get for opencv-doc")
    p.add_argument("--deadline-ms", type=float, default=400.0, help="per-frame deadline for the node")
    p.add_argument("--hedge-ms", type=float, default=300.0, help="the local model starts on a frame the edge has not "
                   "answered by then")
    args = p.parse_args(argv)
    if args.frames < 6:
        p.error("--frames must be >= 6")
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background (SIG_IGN)
    try:
        return run_demo(args)
    except (KeyboardInterrupt, Interrupted):
        say("interrupted: everything started by the demo has been stopped")
        return 130
    except (bags.BagError, RuntimeError) as exc:
        say(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
