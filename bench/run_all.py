"""`make bench`: every benchmark in one run -> docs/BENCHMARKS.md + docs/figures/bench_*.png. Not a test.

    .venv/bin/python bench/run_all.py [--quick] [--tiny] [--skip-node] [--skip-failover] [--doc PATH]

Runs bench/model_latency.py (teacher vs student variants), bench/node_overhead.py (node vs bare Engine vs
echo floor, open loop at 30 Hz, node RSS) and bench/failover_bench.py (switch-over and recovery per fault),
keeps their measurements as JSON beside the doc's build dir, and writes the report from that JSON only.
--quick: few runs and short settings, for a smoke run (its numbers are not worth quoting).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from goals import (  # noqa: E402  (bench/ is on the path above)
    ACC_BUDGET_PTS,
    DETECTION_AP50_BUDGET_PTS,
    DETECTION_PARAM_SHARE_GOAL,
    FPS_GOAL,
    FRAME_PATH_GOAL_MS,
    NODE_OVERHEAD_GOAL_MS,
    NODE_RSS_GOAL_MB,
    SPEEDUP_GOAL,
)


def _group_notes() -> dict:
    import model_latency

    return {g.name: g.note for g in model_latency.default_groups() if g.note}


GROUP_NOTES: dict = {}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def machine_info() -> dict:
    import onnxruntime

    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f" {f}" in text)
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    return {"cpu": cpu, "cpu_flags": flags, "cores": os.cpu_count(), "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version(), "load_start": list(os.getloadavg()), "commit": commit,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


# ------------------------------------------------------------------------------------------ running

def run_node(model: str, frames: int, out_json: Path) -> dict:
    cmd = [sys.executable, str(REPO / "bench" / "node_overhead.py"), "--frames", str(frames), "--model", model,
           "--json", str(out_json)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        return {"error": (proc.stdout + proc.stderr)[-2000:]}
    return json.loads(out_json.read_text(encoding="utf-8"))


def parse_markdown_table(text: str) -> list[dict]:
    """The first markdown table in `text` as dicts (header -> cell)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("|")]
    if len(lines) < 2:
        return []
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(head, (c.strip() for c in ln.strip("|").split("|")), strict=False)) for ln in lines[2:]]


def run_failover(seconds: float, faults: str | None) -> dict:
    if not (REPO / ".venv-edge" / "bin" / "python").is_file():
        return {"error": "the edge venv (.venv-edge) is missing: run `make edge-venv` first"}
    cmd = [sys.executable, str(REPO / "bench" / "failover_bench.py"), "--seconds", str(seconds)]
    if faults:
        cmd += ["--faults", faults]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        return {"error": (proc.stdout + proc.stderr)[-2000:]}
    caption = next((ln for ln in proc.stdout.splitlines() if ln.startswith("30 Hz")), "")
    return {"seconds": seconds, "caption": caption, "rows": parse_markdown_table(proc.stdout)}


def node_model(latency: dict) -> str:
    """The segmentation model the node runs: the shipped CamVid student, else the bench's dense student."""
    for v in latency["variants"]:
        if v["name"].startswith("deployed") and "int8" not in v["name"].lower() and "camvid" in v["group"]:
            return v["path"]
    seg = [v for v in latency["variants"] if v["name"] == "student" and "camvid" in v["group"]]
    seg = seg or [v for v in latency["variants"] if v["name"] == "student"
                  and any(g["task"] == "segmentation" and g["name"] == v["group"] for g in latency["groups"])]
    return seg[0]["path"]


# ------------------------------------------------------------------------------------------ goals

def _teacher(latency: dict, group: str) -> dict | None:
    return next((v for v in latency["variants"] if v["group"] == group and v["name"] == "teacher"), None)


def accuracy_gap_pts(variant: dict, teacher: dict | None) -> float | None:
    """Teacher minus variant in percentage points of the primary metric; None when either is unknown."""
    acc, ref = variant.get("accuracy") or {}, (teacher or {}).get("accuracy") or {}
    if "value" not in acc or "value" not in ref or acc.get("metric") != ref.get("metric"):
        return None
    return (ref["value"] - acc["value"]) * 100.0


def accuracy_budget_pts(task: str) -> float:
    """Points of the primary metric a student may lose to its teacher: issue 7's per task (top-1, pixel
    accuracy), issue 14's AP50 budget for detection."""
    return DETECTION_AP50_BUDGET_PTS if task == "detection" else ACC_BUDGET_PTS[task]


def _gap_text(gap: float | None, task: str) -> str:
    if gap is None:
        return "accuracy not measured"
    budget = accuracy_budget_pts(task)
    verdict = "within" if gap <= budget else "outside"
    side = f"{gap:.1f} pt below" if gap >= 0 else f"{-gap:.1f} pt above"
    return f"{side} the teacher, {verdict} the {budget:.0f} pt budget"


class Metric(NamedTuple):
    """One goal on a ratio-row key: met when the value reaches `goal` (or stays under it: higher=False)."""
    key: str
    goal: float
    fmt: str
    text: str
    higher: bool = True
    best: str = "fastest"  # what the best value is called in the report
    alone: str = "speed only"  # a goal met while the accuracy is unknown

    def meets(self, value: float) -> bool:
        return value >= self.goal if self.higher else value <= self.goal

    def pick(self, rows: list[dict]) -> dict:
        return (max if self.higher else min)(rows, key=lambda r: r[self.key])


def _metrics(group: str, task: str, frame_hw) -> list[Metric]:
    """The speed (and, for detection, size) goals of a group. Detection's count the whole Engine.infer on the
    camera frame (NMS included, issue 14); the others' speedup is the onnxruntime session's (issue 8)."""
    h, w = frame_hw
    fps = f"{group}: {h}x{w} camera frames at >= {FPS_GOAL:.0f} frames/s on one core "
    if task == "detection":
        return [Metric("frame_speedup_p50_1thread", SPEEDUP_GOAL, "{:.1f}x",
                       f"{group}: student >= {SPEEDUP_GOAL:.0f}x faster than teacher on {h}x{w} camera frames "
                       "(Engine.infer p50 incl. NMS, 1 thread)"),
                Metric("frame_fps_1thread", FPS_GOAL, "{:.1f} frames/s", fps + "(Engine.infer incl. resize + NMS)"),
                Metric("param_share", DETECTION_PARAM_SHARE_GOAL, "{:.1%} of the teacher's parameters",
                       f"{group}: student >= {1 - DETECTION_PARAM_SHARE_GOAL:.0%} fewer (nonzero) parameters than "
                       "the teacher", higher=False, best="smallest", alone="size only")]
    metrics = [Metric("speedup_p50_1thread", SPEEDUP_GOAL, "{:.1f}x",
                      f"{group}: student >= {SPEEDUP_GOAL:.0f}x faster than teacher (p50, 1 thread)")]
    if task == "segmentation":
        metrics.append(Metric("frame_fps_1thread", FPS_GOAL, "{:.1f} frames/s",
                              fps + "(Engine.infer incl. resize + mask)"))
    return metrics


def goal_rows(latency: dict, node: dict | None) -> list[dict]:
    """Each goal of issues 8 and 14 with the measured value. A speed (or size) goal holds only for a variant whose
    accuracy was measured within the results issue's budget; the best variant is shown beside it either way."""
    rows = []
    tasks = {g["name"]: g["task"] for g in latency["groups"]}
    by_key = {(v["group"], v["name"]): v for v in latency["variants"]}
    for group, task in tasks.items():
        teacher = _teacher(latency, group)
        cands = [r for r in latency["ratios"] if r["group"] == group]
        if not cands:
            continue
        gaps = {r["variant"]: accuracy_gap_pts(by_key[(group, r["variant"])], teacher) for r in cands}
        for metric in _metrics(group, task, cands[0]["frame_hw"]):
            rows += _metric_row(latency, group, task, metric, cands, gaps)
        if task == "segmentation":
            rows += _frame_path_rows(group, [v for (g, _), v in by_key.items() if g == group])
        if task == "detection":
            rows.append(_ap50_row(group, teacher, gaps, by_key))
    if node and "sizes" in node:
        for frame, r in node["sizes"].items():
            beyond = r["node"][0] - r["engine"][0] - r["echo"][0]
            rows.append({"goal": f"node overhead over the echo floor <= {NODE_OVERHEAD_GOAL_MS:.0f} ms ({frame})",
                         "measured": f"{beyond:.2f} ms (p50)", "holds": beyond <= NODE_OVERHEAD_GOAL_MS})
        peak = max(r["node_rss_mb"]["peak"] for r in node["sizes"].values())
        rows.append({"goal": f"node RSS with the segmentation model <= {NODE_RSS_GOAL_MB:.0f} MB",
                     "measured": f"{peak:.0f} MB peak (VmHWM)", "holds": peak <= NODE_RSS_GOAL_MB})
    return rows


def _metric_row(latency: dict, group: str, task: str, m: Metric, cands: list[dict], gaps: dict) -> list[dict]:
    """The goal row of one metric: the best variant within the accuracy budget, and the best of all."""
    cands = [r for r in cands if r.get(m.key) is not None]  # e.g. a parameter count the card does not give
    if not cands:
        return []
    budget = accuracy_budget_pts(task)
    ok = [r for r in cands if gaps[r["variant"]] is not None and gaps[r["variant"]] <= budget]
    best = m.pick(cands)
    best_ok = m.pick(ok) if ok else None
    parts = []
    if best_ok is not None:
        parts.append(f"{m.fmt.format(best_ok[m.key])} within the accuracy budget ({best_ok['variant']}, "
                     f"{_gap_text(gaps[best_ok['variant']], task)})")
    else:
        parts.append("no variant has a measured accuracy within the budget")
    if best_ok is None or best_ok is not best:
        parts.append(f"{m.best}: {m.fmt.format(best[m.key])} ({best['variant']}, "
                     f"{_gap_text(gaps[best['variant']], task)})")
    if best_ok is not None:
        holds = m.meets(best_ok[m.key])
    elif m.meets(best[m.key]) and gaps[best["variant"]] is None:
        holds = f"{m.alone}: accuracy not measured"
    else:
        holds = False
    row = {"goal": m.text, "measured": "; ".join(parts), "holds": holds}
    if holds is False:
        profiles = [latency.get("profile", {}).get(group)] + latency.get("profile_deployed", {}).get(group, [])
        row["why"] = _why_missed(cands, gaps, m, task, best_ok, [p for p in profiles if p])
    return [row]


def _ap50_row(group: str, teacher: dict | None, gaps: dict, by_key: dict) -> dict:
    """Issue 14: the student's AP50 within the budget of the teacher's, on the same validation images. The
    student is the shipped one (deployed rows); until it exists the closest student variant is shown and the
    goal is not met yet."""
    budget = DETECTION_AP50_BUDGET_PTS
    text = f"{group}: student AP50 within {budget:g} pt of the teacher's (validation images)"
    t_acc = (teacher or {}).get("accuracy") or {}
    if "value" not in t_acc:
        weights = (teacher or {}).get("weights", "no teacher")
        return {"goal": text, "measured": f"teacher AP50 not measured (teacher weights: {weights})",
                "holds": "not measured"}
    scored = {name: gap for name, gap in gaps.items() if gap is not None}
    deployed = [name for name in scored if name.startswith("deployed")]
    pool = deployed or list(scored)
    teacher_txt = f"teacher {t_acc['value'] * 100:.1f} %" + (f" (n={t_acc['n']})" if t_acc.get("n") else "")
    if not pool:
        return {"goal": text, "measured": f"{teacher_txt}; no student variant scored", "holds": "not measured"}
    name = min(pool, key=scored.get)
    acc = by_key[(group, name)]["accuracy"]["value"] * 100
    measured = f"{name}: {acc:.1f} % vs {teacher_txt}, {_gap_text(scored[name], 'detection')}"
    if not deployed:
        measured += "; no deployed student yet (shown: the closest student variant)"
    holds = scored[name] <= budget if deployed else "not yet: no deployed student"
    return {"goal": text, "measured": measured, "holds": holds}


def _frame_path_rows(group: str, variants: list[dict]) -> list[dict]:
    """The shipped float students' time outside the onnxruntime session: frame p50 - session p50, measured
    side by side in the same run (camera-frame resize, normalise, argmax, mask back to frame size)."""
    rows = []
    for v in variants:
        t = v.get("timing", {}).get("1")
        if not t or not v["name"].startswith("deployed") or "int8" in v["name"].lower():
            continue
        outside = t["frame_p50"] - t["session_p50"]
        rows.append({"goal": f"{group}: {v['name']} frame path outside onnxruntime <= {FRAME_PATH_GOAL_MS:g} ms",
                     "measured": f"{outside:.2f} ms (frame p50 {t['frame_p50']:.2f} - session p50 "
                                 f"{t['session_p50']:.2f}, 1 thread)",
                     "holds": outside <= FRAME_PATH_GOAL_MS})
    return rows


def _why_missed(cands, gaps, m: Metric, task, best_ok, profiles) -> str:
    """Name the limit of a missed speed (or size) goal: accuracy (the variants fast or small enough are too
    inaccurate) and/or speed / size (the best variant within the accuracy budget misses it; for speed, its
    profile's hot spot, if profiled)."""
    key, fmt = m.key, m.fmt
    fast = [r for r in cands if m.meets(r[key]) and gaps[r["variant"]] is not None]
    parts = []
    if fast:
        closest = min(fast, key=lambda r: gaps[r["variant"]])
        parts.append(f"accuracy: {len(fast)} variant(s) reach {fmt.format(m.goal)}, the most accurate of them is "
                     f"{closest['variant']} ({fmt.format(closest[key])}, {_gap_text(gaps[closest['variant']], task)})")
    else:
        parts.append(f"no variant reaches {fmt.format(m.goal)}")
    if best_ok is None:
        parts.append("no variant is within the accuracy budget")
        return "; ".join(parts)
    what = "speed" if m.higher else "size"
    parts.append(f"{what}: the {m.best} variant within the accuracy budget, {best_ok['variant']}, reaches "
                 f"{fmt.format(best_ok[key])}")
    prof = next((p for p in profiles if p["variant"] == best_ok["variant"] and p.get("ops")), None)
    if prof is not None and m.higher:
        ops = ", ".join(f"{o['op']} {o['share'] * 100:.0f} %" for o in prof["ops"][:3])
        parts.append(f"its kernel time (onnxruntime profiler): {ops}")
    return "; ".join(parts)


# ------------------------------------------------------------------------------------------ report

def _holds(value) -> str:
    if isinstance(value, str):
        return value
    return "yes" if value else "**no**"


def _f(v, fmt="{:.2f}") -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(v)


def _acc_cell(v: dict) -> str:
    acc = v.get("accuracy") or {}
    if "value" not in acc:
        return v.get("accuracy_note") or "n/a (not scored)"
    name = {"top1": "top-1", "pixel_acc": "pixel acc", "ap50": "AP50"}.get(acc["metric"], acc["metric"])
    cell = f"{name} {acc['value'] * 100:.2f} %"
    for key, label in (("miou", "mIoU"), ("ap", "AP")):  # the secondary metric: segmentation's, detection's
        if key in acc:
            cell += f", {label} {acc[key] * 100:.1f} %"
    n = f", n={acc['n']}" if acc.get("n") else ""
    return f"{cell} ({acc['source']}{n})"


def latency_table(latency: dict, group: str) -> list[str]:
    teacher = _teacher(latency, group)
    t50 = teacher["timing"]["1"]["session_p50"] if teacher else None
    f50 = teacher["timing"]["1"]["frame_p50"] if teacher else None
    head = ["variant", "weights", "nonzero params", "MMACs", "size MB", "accuracy", "1 thr p50", "1 thr p95",
            "1 thr frame p50", "2 thr p50", "2 thr p95", "peak RSS MB", "speedup (1 thr p50)",
            "speedup (1 thr frame p50)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in latency["variants"]:
        if v["group"] != group:
            continue
        t1, t2 = v["timing"].get("1", {}), v["timing"].get("2", {})
        speed = t50 / t1["session_p50"] if t50 and t1 else None
        frame_speed = f50 / t1["frame_p50"] if f50 and t1 else None
        lines.append("| " + " | ".join([
            v["name"], v["weights"], _f(v["params"], "{:,}") if v["params"] else "n/a",
            _f(v["macs"] / 1e6, "{:.1f}") if v["macs"] else "n/a", _f(v["size_mb"]), _acc_cell(v),
            _f(t1.get("session_p50")), _f(t1.get("session_p95")), _f(t1.get("frame_p50")),
            _f(t2.get("session_p50")), _f(t2.get("session_p95")), _f(v["peak_rss_mb"], "{:.0f}"),
            _f(speed, "{:.2f}x"), _f(frame_speed, "{:.2f}x")]) + " |")
    return lines


def observations(latency: dict) -> list[str]:
    """Side-by-side ratios within each group, computed from the run (1 thread, session p50)."""
    lines = []
    for g in latency["groups"]:
        mine = {v["name"]: v for v in latency["variants"] if v["group"] == g["name"]}
        dense = mine.get("student")
        if dense is None:
            continue

        def p50(v, thr="1"):
            return v["timing"][thr]["session_p50"]

        def acc(v):
            a = v.get("accuracy") or {}
            return f"{a['value'] * 100:.2f} %" if "value" in a else "n/a"

        parts = []
        for name, v in mine.items():
            if v is dense or name == "teacher" or name.startswith(("deployed", "fine-tuned")):
                continue
            parts.append(f"{name}: {p50(dense) / p50(v):.2f}x the dense student's speed, "
                         f"{v['size_mb']:.2f} MB vs {dense['size_mb']:.2f} MB, accuracy {acc(v)} vs {acc(dense)}")
        slower = sum(1 for v in mine.values() if "2" in v["timing"] and p50(v, "2") > p50(v, "1"))
        parts.append(f"2 threads slower than 1 thread for {slower} of {len(mine)} variants")
        lines += [f"- **{g['name']}**: " + "; ".join(parts) + "."]
    return lines


def plots(latency: dict, fig_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    groups = [g["name"] for g in latency["groups"]]
    names = []

    from matplotlib.ticker import FormatStrFormatter

    plain = FormatStrFormatter("%g")
    scored_groups = [g for g in groups
                     if any("value" in (v.get("accuracy") or {}) for v in latency["variants"] if v["group"] == g)]
    shown = scored_groups or groups[:1]
    fig, axes = plt.subplots(1, len(shown), figsize=(5.5 * len(shown), 4.2), squeeze=False)
    for ax, group in zip(axes[0], shown, strict=True):
        pts = [v for v in latency["variants"] if v["group"] == group]
        scored = [v for v in pts if "value" in (v.get("accuracy") or {})]
        for v in scored:
            x, y = v["timing"]["1"]["session_p50"], v["accuracy"]["value"] * 100
            ax.scatter(x, y, s=30)
            ax.annotate(v["name"].replace("student ", ""), (x, y), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        metric = scored[0]["accuracy"]["metric"] if scored else "accuracy"
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        ax.tick_params(axis="x", which="minor", labelsize=6)
        ax.set_xlabel("onnxruntime p50 latency, 1 thread (ms, log)")
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(group + ("" if scored else " (no trained weights in any group: nothing scored)"), fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(fig_dir / "bench_accuracy_latency.png", dpi=110)
    plt.close(fig)
    names.append("bench_accuracy_latency.png")

    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4.8), squeeze=False)
    for ax, group in zip(axes[0], groups, strict=True):
        pts = [v for v in latency["variants"] if v["group"] == group]
        labels = [v["name"].replace("student ", "s. ").replace(" (no fine-tune)", "").replace(" (class-blind)", "")
                  for v in pts]
        x = range(len(pts))
        for k, thr in enumerate(("1", "2")):
            vals = [v["timing"].get(thr, {}).get("session_p50", float("nan")) for v in pts]
            ax.bar([i + (k - 0.5) * 0.38 for i in x], vals, width=0.38, label=f"{thr} thread(s) p50")
        ax.set_xticks(list(x))
        ax.set_xticklabels(labels, rotation=40, ha="right", fontsize=7)
        ax.set_ylabel("ms")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.tick_params(axis="y", which="minor", labelsize=6)
        ax.set_title(group, fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(fig_dir / "bench_latency_bars.png", dpi=110)
    plt.close(fig)
    names.append("bench_latency_bars.png")
    return names


def render(info: dict, latency: dict, node: dict | None, failover: dict | None, figures: list[str],
           quick: bool, elapsed_s: float, fig_rel: str = "figures", build_rel: str = "build/bench") -> str:
    """The whole of BENCHMARKS.md, section by section, from one run's measurements."""
    out = _header_section(info, latency, quick, elapsed_s, build_rel)
    out += _goals_section(latency, node)
    out += _latency_section(latency, figures, fig_rel)
    out += _node_section(node)
    out += _failover_section(failover)
    return "\n".join(out)


def _header_section(info: dict, latency: dict, quick: bool, elapsed_s: float, build_rel: str) -> list[str]:
    """Where the numbers come from: command, commit, machine, load, method."""
    load1 = info["load_start"][0]
    busy = load1 > 0.5 * (info["cores"] or 1)
    out = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`bench/run_all.py`" + (" --quick" if quick else "") + f") at {info['started']}, "
        f"commit `{info['commit']}`" + (f", in {elapsed_s / 60:.1f} min" if elapsed_s else "")
        + ". Every number below comes from that one run "
        f"(raw JSON in `{build_rel}/`); rerun the command to regenerate this file and its figures.",
        "",
        f"- machine: {info['cpu']} ({info['cpu_flags'] or 'no AVX2/AVX-512 flags seen'}), {info['cores']} cores, "
        f"Python {info['python']}, onnxruntime {info['onnxruntime']} CPU execution provider",
        f"- load average at start: {', '.join(f'{x:.2f}' for x in info['load_start'])}"
        + (" — **the machine was shared and busy**: absolute times are inflated and noisy; the ratios are "
           "measured side by side (interleaved blocks) so load hits every variant alike" if busy else ""),
        "- method: batch 1, `robot_compress.runtime.Engine` (IOBinding, graph optimisation ALL), warm-up "
        "excluded; sizes are height x width unless marked; `p50/p95` = onnxruntime session on the bound input; "
        "`frame p50` = `Engine.infer` on one camera "
        "frame at the robot's resolution (resize, normalise, run, top-k / argmax + mask back to frame size; "
        "detection: score threshold, per-class NMS, boxes back to frame pixels); "
        "peak RSS = peak resident memory (VmHWM; `ru_maxrss` would carry the forking parent's size across exec) "
        "of a fresh process that loads the model and runs 10 frames "
        f"(interpreter + onnxruntime alone: {_f(latency.get('rss_floor_mb'), '{:.0f}')} MB)",
        "",
    ]
    if quick:
        out += ["> **--quick smoke run**: few timing runs, nothing scored; not numbers to quote.", ""]
    return out


def _goals_section(latency: dict, node: dict | None) -> list[str]:
    goals = goal_rows(latency, node)
    out = ["## Goals (issue 8)", "", "| goal | measured | holds |", "|---|---|---|"]
    out += [f"| {g['goal']} | {g['measured']} | {_holds(g['holds'])} |" for g in goals]
    out += [""]
    missed = [g for g in goals if g.get("why")]
    if missed:
        out += ["What limits each missed goal (from the same run):", ""]
        out += [f"- {g['goal']}: {g['why']}" for g in missed]
        out += [""]
    return out


def _latency_section(latency: dict, figures: list[str], fig_rel: str) -> list[str]:
    out = ["## Model latency: teacher vs student variants", ""]
    for g in latency["groups"]:
        runs = {v["timing"]["1"]["runs"] for v in latency["variants"] if v["group"] == g["name"]}
        h, w = g["frame_hw"]
        out += [f"### {g['name']} ({g['task']}, {g['teacher_arch']} -> {g['student_arch']}, camera frame {h}x{w})",
                "", f"Runs per variant and thread count: {', '.join(str(r) for r in sorted(runs))}. Times in ms.",
                ""]
        out += latency_table(latency, g["name"]) + [""]
        note = g.get("note") or GROUP_NOTES.get(g["name"], "")
        if note:
            out += [note, ""]
    out += ["Measured in this run (1 thread, session p50, each variant against the dense student):", ""]
    out += observations(latency) + [""]
    out += [
        "Reading the tables:",
        "",
        "- *unstructured (class-blind)* is the paper's pruning: the weights are zeros in dense tensors, so the "
        "ONNX file and onnxruntime's dense kernels do the same work — expect no speedup (the size on disk does "
        "not shrink either; only a compressed archive would).",
        "- *structured* removes whole channels (torch-pruning), so the graph itself is smaller. It is measured "
        "here without fine-tuning: its accuracy shows what one-shot channel removal costs; the recipes "
        "`config/recipes/*structured*` fine-tune it with KD (issue 7's training runs).",
        "- *INT8* is onnxruntime QDQ static quantization (per-channel weights, `quant_pre_process`, MinMax "
        "calibration). Its speed depends on the CPU's integer dot-product support (VNNI); measure, don't assume.",
        "",
    ]
    out += _profile_lines(latency)
    if figures:
        out += ["![accuracy vs latency](" + f"{fig_rel}/bench_accuracy_latency.png)", "",
                "![latency per variant](" + f"{fig_rel}/bench_latency_bars.png)", ""]
    return out


# What Engine.infer does outside the onnxruntime session, per task
_OUTSIDE_SESSION = {None: "camera-frame resize, normalise, argmax / top-k, mask back to frame size",
                    "detection": "camera-frame resize, normalise, score threshold, per-class NMS, boxes back to "
                                 "frame pixels"}


def _profile_lines(latency: dict) -> list[str]:
    """Where the time goes in the profiled variants (fastest and shipped students), group order kept."""
    if not latency.get("profile"):
        return []
    out = ["### Where the time goes (onnxruntime profiler, 1 thread, fastest and shipped students)", ""]
    by_key = {(v["group"], v["name"]): v for v in latency["variants"]}
    profiled = list(latency["profile"].items())
    profiled += [(group, prof) for group, profs in latency.get("profile_deployed", {}).items() for prof in profs]
    order = [g["name"] for g in latency["groups"]]
    profiled.sort(key=lambda gp: order.index(gp[0]) if gp[0] in order else len(order))  # stable: fastest first
    tasks = {g["name"]: g["task"] for g in latency["groups"]}
    for group, prof in profiled:
        ops = ", ".join(f"{o['op']} {o['share'] * 100:.0f} % ({o['ms_per_run']:.2f} ms)" for o in prof["ops"])
        t = by_key[(group, prof["variant"])]["timing"]["1"]
        out += [f"- {group}, {prof['variant']}: kernels {ops}; outside the session (frame p50 - session p50: "
                f"{_OUTSIDE_SESSION.get(tasks.get(group), _OUTSIDE_SESSION[None])}) "
                f"{t['frame_p50'] - t['session_p50']:.2f} ms"]
    return out + [""]


def _not_measured(result: dict | None, skip_flag: str, failed: str) -> list[str] | None:
    """The lines for a benchmark that was skipped or failed; None when it has results."""
    if not result:
        return [f"Not run ({skip_flag}).", ""]
    if "error" in result:
        return [failed, "", "```", result["error"], "```", ""]
    return None


def _node_section(node: dict | None) -> list[str]:
    return ["## perception_node overhead", ""] + (
        _not_measured(node, "--skip-node", "The node benchmark failed:") or _node_lines(node))


def _node_lines(node: dict) -> list[str]:
    out = [f"`bench/node_overhead.py --frames {node['frames']}` with `{Path(node['model']).name}`, "
            f"{node['threads']} thread. Closed loop (publish, wait for the result, next), node / echo / bare "
            "Engine interleaved in blocks of 10 frames. *overhead* = node p50 - Engine p50; *beyond echo* = "
            "overhead - echo p50 (the echo node is the cheapest rclpy round trip with the same messages); "
            "*in-node* = the node's own receipt -> result time; frames here are width x height. "
            "*open loop*: frames published at 30 Hz without waiting; a missing result is a drop.", "",
            "| frame | Engine p50 | in-node p50 | node p50 | node p95 | echo p50 | overhead p50 | beyond echo | "
            "open loop: results / sent | frames/s | node RSS peak MB |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for frame, r in node["sizes"].items():
        s = r.get("sustained") or {}
        overhead = r["node"][0] - r["engine"][0]
        out.append(f"| {frame} | {r['engine'][0]:.2f} | {r['inside'][0]:.2f} | {r['node'][0]:.2f} | "
                   f"{r['node'][1]:.2f} | "
                   f"{r['echo'][0]:.2f} | {overhead:.2f} | {overhead - r['echo'][0]:.2f} | "
                   f"{s.get('received', 'n/a')} / {s.get('published', 'n/a')} | {_f(s.get('fps'), '{:.1f}')} | "
                   f"{r['node_rss_mb']['peak']:.0f} |")
    return out + [""]


def _failover_section(failover: dict | None) -> list[str]:
    return ["## Failover: switch-over and recovery", ""] + (
        _not_measured(failover, "--skip-failover", "The failover benchmark did not run:") or _failover_lines(failover))


def _failover_lines(failover: dict) -> list[str]:
    out = [f"`bench/failover_bench.py --seconds {failover['seconds']:g}` (a real Triton server behind the "
            "fault proxy, local student as fallback). " + failover["caption"], "",
            "*switch ms* = latency of the first frame after the fault starts; *recover s* = fault end (server "
            "ready again, for server_kill) -> first edge result.", ""]
    if failover["rows"]:
        head = list(failover["rows"][0])
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(r.get(h, "") for h in head) + " |" for r in failover["rows"]]
    return out + [""]


def write_doc(doc: Path, latency: dict, bench_all: dict, build: Path) -> str:
    fig_dir = doc.parent / "figures"
    figures = plots(latency, fig_dir)
    build_rel = os.path.relpath(build.resolve(), REPO) if build.resolve().is_relative_to(REPO) else str(build)
    text = render(bench_all["machine"], latency, bench_all["node"], bench_all["failover"], figures,
                  bench_all.get("quick", False), bench_all.get("elapsed_s"), os.path.relpath(fig_dir, doc.parent),
                  build_rel)
    doc.write_text(text + "\n", encoding="utf-8")
    log(f"wrote {doc} and {', '.join(figures)} in {fig_dir}")
    return text


def render_only(args) -> int:
    """Rewrite the doc and figures from the JSON of the last run in --build (no new measurement)."""
    try:
        latency = json.loads((args.build / "model_latency.json").read_text(encoding="utf-8"))
        bench_all = json.loads((args.build / "bench_all.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        log(f"--render-only needs a finished run's JSON in {args.build}: {exc}")
        return 2
    write_doc(args.doc, latency, bench_all, args.build)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: few runs, short node/failover settings")
    ap.add_argument("--tiny", action="store_true", help="tiny stand-in models instead of the real ones (tests)")
    ap.add_argument("--skip-node", action="store_true")
    ap.add_argument("--skip-failover", action="store_true")
    ap.add_argument("--runs", type=int, default=200, help="timed runs per variant and thread count")
    ap.add_argument("--node-frames", type=int, default=100)
    ap.add_argument("--failover-seconds", type=float, default=4.0)
    ap.add_argument("--eval-limit", type=int, default=None, help="score at most this many validation items")
    ap.add_argument("--build", type=Path, default=REPO / "build" / "bench", help="models and raw JSON go here")
    ap.add_argument("--doc", type=Path, default=REPO / "docs" / "BENCHMARKS.md")
    ap.add_argument("--render-only", action="store_true",
                    help="rewrite the doc and figures from the last run's JSON in --build, measuring nothing")
    args = ap.parse_args(argv)

    import model_latency

    GROUP_NOTES.update(_group_notes())
    if args.render_only:
        return render_only(args)
    t0 = time.monotonic()
    info = machine_info()
    log(f"machine: {info['cpu']}, {info['cores']} cores, load {info['load_start']}")
    args.build.mkdir(parents=True, exist_ok=True)
    groups = model_latency.tiny_groups() if args.tiny else model_latency.default_groups()
    runs = 30 if args.quick else args.runs
    latency = model_latency.run(groups, args.build / "models", runs, evaluate=not args.quick, rss=True,
                                profile=True, eval_limit=args.eval_limit, log=log,
                                max_seconds=None if runs >= 200 else 60)
    (args.build / "model_latency.json").write_text(json.dumps(latency, indent=1), encoding="utf-8")

    node = None
    if not args.skip_node:
        log("node overhead ...")
        node = run_node(node_model(latency), 20 if args.quick else args.node_frames, args.build / "node.json")
    failover = None
    if not args.skip_failover:
        log("failover ...")
        failover = run_failover(2.0 if args.quick else args.failover_seconds,
                                "none,link_down,server_kill" if args.quick else None)
    bench_all = {"machine": info, "node": node, "failover": failover, "quick": args.quick,
                 "elapsed_s": time.monotonic() - t0}
    (args.build / "bench_all.json").write_text(json.dumps(bench_all, indent=1), encoding="utf-8")
    text = write_doc(args.doc, latency, bench_all, args.build)
    print("\n".join(ln for ln in text.splitlines() if ln.startswith("|") and re.search(r"goal|holds|yes|no", ln)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
