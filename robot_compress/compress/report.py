"""Tables and plots in the paper's form, built only from runs' metrics.json files (no typed numbers).

- Table 2 (classification KD): teacher accuracy -> student accuracy, with and without KD.
- Accuracy vs % pruned: one column per criterion, one table per (task, KD setting).
- Table 3 (segmentation): pixel accuracy, mIoU and parameters per run.
- Plots: accuracy vs % pruned and vs effective parameters. One colour per criterion in every plot (solid = KD,
  dashed = no KD, dotted = right after pruning, before fine-tuning: the paper's no-retrain curve), with the
  teacher and the unpruned (0 %) student as horizontal reference lines.
Accuracies are printed in percent (the meters store fractions).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from robot_compress.compress.runinfo import METRICS_FILE, read_json


class ReportError(ValueError):
    pass


def collect_runs(paths) -> list[dict]:
    """Every metrics.json under the given dirs (a run dir, a sweep dir, or a file)."""
    runs, seen = [], set()
    for root in paths:
        root = Path(root)
        if not root.exists():
            raise ReportError(f"run path not found: {root}")
        files = [root] if root.is_file() else sorted(root.rglob(METRICS_FILE))
        for f in files:
            if f.resolve() in seen:
                continue
            seen.add(f.resolve())
            data = read_json(f)
            if isinstance(data, dict) and "student" in data and "primary" in data:
                data["_dir"] = str(f.parent)
                runs.append(data)
    if not runs:
        raise ReportError(f"no finished runs (metrics.json with results) under {[str(p) for p in paths]}")
    return runs


def _pct(value) -> str:
    return "n/a" if value is None else f"{100.0 * float(value):.2f}"


def _acc(metrics: dict | None, key: str):
    return None if not metrics else metrics.get(key)


def _amount(run: dict) -> float:
    return float(run["pruning"]["amount"]) if run.get("pruning") else 0.0


def _kd(run: dict) -> bool:
    return bool(run["student"].get("kd"))


def table_kd(runs: list[dict]) -> list[str]:
    """Table 2: teacher acc -> student acc (the student before any pruning)."""
    rows = {}
    for r in runs:
        if r["task"] != "classification" or not r.get("teacher"):
            continue
        student_acc = _acc(r["student"].get("before_pruning") or r["student"]["metrics"], "top1")
        key = (r["teacher"]["model"], r["student"]["model"], _kd(r))
        rows.setdefault(key, (r["teacher"]["metrics"]["top1"], student_acc, r["student"]["params"]["total"],
                              r["teacher"]["params"]["total"]))
    if not rows:
        return []
    out = ["## Table 2: knowledge distillation (top-1 %, validation split)", "",
           "| teacher | teacher params | teacher acc | student | student params | KD | student acc |",
           "|---|---:|---:|---|---:|---|---:|"]
    for (t, s, kd), (t_acc, s_acc, s_params, t_params) in sorted(rows.items()):
        out.append(f"| {t} | {t_params} | {_pct(t_acc)} | {s} | {s_params} | {'yes' if kd else 'no'} | "
                   f"{_pct(s_acc)} |")
    return out + [""]


# What each task's primary metric is called in the tables and plots (metrics.json "primary").
METRIC_NAME = {"classification": "top-1", "segmentation": "pixel accuracy", "detection": "AP50"}


def pruning_series(runs: list[dict]) -> dict:
    """{(task, student, kd, source): {criterion: [(amount, accuracy, effective_params), ...]}} sorted by amount.

    `source` is the sweep a cell belongs to (else the run's own name): runs with other schedules are
    separate series, not points on a sweep's curve."""
    series: dict = defaultdict(lambda: defaultdict(list))
    for r in runs:
        if not r.get("pruning"):
            continue
        m = r["student"]["metrics"]
        key = (r["task"], r["student"]["model"], _kd(r), (r.get("tags") or {}).get("sweep") or r["name"])
        points = series[key][r["pruning"]["criterion"]]
        # A run that prunes in several stages (each followed by fine-tuning) is a curve of its own.
        for step in (r.get("pruning_steps") or [])[:-1]:
            if "metrics" in step and step["criterion"] == r["pruning"]["criterion"]:
                points.append((step["amount"], step["metrics"][r["primary"]], step["params"].get("effective")))
        points.append((_amount(r), m[r["primary"]], r["student"]["params"].get("effective")))
    return {k: {c: sorted(v) for c, v in crit.items()} for k, crit in series.items()}


def no_retrain_series(runs: list[dict]) -> dict:
    """Like `pruning_series`, with the accuracy measured right after pruning, before any fine-tuning (runs
    recorded before this was measured have no points)."""
    series: dict = defaultdict(lambda: defaultdict(list))
    for r in runs:
        pruning = r.get("pruning") or {}
        if not pruning.get("after_pruning"):
            continue
        key = (r["task"], r["student"]["model"], _kd(r), (r.get("tags") or {}).get("sweep") or r["name"])
        points = series[key][pruning["criterion"]]
        for step in (r.get("pruning_steps") or [])[:-1]:
            if step.get("after_pruning") and step["criterion"] == pruning["criterion"]:
                points.append((step["amount"], step["after_pruning"][r["primary"]], None))
        points.append((_amount(r), pruning["after_pruning"][r["primary"]], None))
    return {k: {c: sorted(v) for c, v in crit.items()} for k, crit in series.items()}


def baselines(runs: list[dict]) -> dict:
    """{(task, student): {"teacher": (model, accuracy) | None, "dense": {kd: accuracy}}}: the reference lines
    of the pruning plots (the teacher, and the student before pruning = 0 % pruned)."""
    out: dict = {}
    for r in runs:
        entry = out.setdefault((r["task"], r["student"]["model"]), {"teacher": None, "dense": {}})
        teacher = r.get("teacher")
        if teacher and entry["teacher"] is None:
            entry["teacher"] = (teacher["model"], teacher["metrics"][r["primary"]])
        before = r["student"].get("before_pruning")
        if before and r.get("pruning"):
            entry["dense"].setdefault(_kd(r), before[r["primary"]])
        elif not r.get("pruning") and not r.get("structured"):
            entry["dense"].setdefault(_kd(r), r["student"]["metrics"][r["primary"]])
    return out


def table_pruning(series: dict, no_retrain: dict | None = None) -> list[str]:
    out = []
    for key, crit in sorted(series.items()):
        task, student, kd, source = key
        metric = f"{METRIC_NAME[task]} %"
        names = sorted(crit)
        raw = (no_retrain or {}).get(key, {})
        raw_names = sorted(raw)
        amounts = sorted({a for pts in crit.values() for a, _, _ in pts})
        out += [f"## Accuracy vs % pruned: {student} ({task}, KD {'on' if kd else 'off'}; {metric}; {source})", "",
                "| % pruned | " + " | ".join(names) + " | " + " | ".join(f"eff. params ({n})" for n in names)
                + "".join(f" | {n} before fine-tuning" for n in raw_names) + " |",
                "|---:|" + "---:|" * (2 * len(names) + len(raw_names))]
        for a in amounts:
            acc = [next((_pct(v) for x, v, _ in crit[n] if x == a), "") for n in names]
            eff = [next((str(e) for x, _, e in crit[n] if x == a), "") for n in names]
            before = [next((_pct(v) for x, v, _ in raw[n] if x == a), "") for n in raw_names]
            out.append(f"| {100 * a:g} | " + " | ".join(acc) + " | " + " | ".join(eff)
                       + "".join(f" | {b}" for b in before) + " |")
        out.append("")
    return out


def pruning_method(r: dict) -> str:
    """How a run's student was pruned, e.g. "structured 60 %" or "class-blind 85 %" ("-" when not)."""
    parts = []
    if r.get("structured"):
        parts.append(f"structured {100 * r['structured']['ratio']:g} %")
    if r.get("pruning"):
        parts.append(f"{r['pruning']['criterion']} {100 * r['pruning']['amount']:g} %")
    return " + ".join(parts) or "-"


def table_segmentation(runs: list[dict]) -> list[str]:
    """Table 3: every segmentation run, with its compression (nonzero params) against its own KD teacher
    (runs scored without one, e.g. sweep cells, against the first teacher found)."""
    seg = [r for r in runs if r["task"] == "segmentation"]
    if not seg:
        return []
    default = next((r["teacher"] for r in seg if r.get("teacher")), None)
    out = ["## Table 3: segmentation (validation split)", "",
           "| run | model | KD | pruning | pixel acc % | mIoU % | params | nonzero | effective | "
           "compression vs teacher % | teacher pixel acc % | ONNX pixel acc % |",
           "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    teachers: dict[tuple, dict] = {}
    for r in sorted(seg, key=lambda r: (r["name"], _amount(r))):
        m, p = r["student"]["metrics"], r["student"]["params"]
        is_teacher = (r.get("tags") or {}).get("role") == "teacher"  # a teacher recipe: nothing to compare with
        teacher = r.get("teacher") or (None if is_teacher else default)
        onnx = next((e.get("metrics") for e in r.get("onnx", []) if e.get("kind") == "fp32" and e.get("metrics")),
                    None)
        t_nonzero = teacher["params"]["nonzero"] if teacher else None
        compression = f"{100 * (1 - p['nonzero'] / t_nonzero):.2f}" if t_nonzero and p.get("nonzero") else "-"
        t_acc = _pct(teacher["metrics"].get("pixel_acc")) if teacher else "-"
        if teacher:
            teachers.setdefault((teacher["model"], t_acc), teacher)
        out.append(f"| {r['name']} | {r['student']['model']} | {'yes' if _kd(r) else 'no'} | {pruning_method(r)} | "
                   f"{_pct(m.get('pixel_acc'))} | {_pct(m.get('miou'))} | {p.get('total')} | {p.get('nonzero')} | "
                   f"{p.get('effective')} | {compression} | {t_acc} | {_pct(_acc(onnx, 'pixel_acc'))} |")
    if teachers:
        out += [""] + [f"Teacher {t['model']}: pixel acc {_pct(t['metrics'].get('pixel_acc'))} %, "
                       f"mIoU {_pct(t['metrics'].get('miou'))} %, {t['params']['total']} params."
                       for t in teachers.values()]
    # Per-class IoU for the stand-alone runs; sweep cells are summarised by the curves.
    return out + [""] + table_class_iou([r for r in seg if not (r.get("tags") or {}).get("sweep")])


def table_class_iou(seg: list[dict]) -> list[str]:
    """Per-class IoU (%) of each segmentation run's student (and its teacher), class names from the dataset."""
    rows = []
    for r in sorted(seg, key=lambda r: r["name"]):
        labels = r.get("dataset", {}).get("labels") or []
        models = [(f"{r['name']} ({r['student']['model']})", r["student"]["metrics"])]
        if r.get("teacher"):
            models.append((f"{r['name']} teacher ({r['teacher']['model']})", r["teacher"]["metrics"]))
        for name, m in models:
            ious = m.get("iou_per_class")
            if ious and len(ious) == len(labels):
                rows.append((labels, name, ious))
    if not rows:
        return []
    labels = rows[0][0]
    out = ["## Per-class IoU % (segmentation, validation split)", "",
           "| model | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    out += [f"| {name} | " + " | ".join(_pct(v) for v in ious) + " |" for lab, name, ious in rows if lab == labels]
    return out + [""]


def run_seconds(run: dict) -> float:
    """A run's wall time; a training stage resumed from a checkpoint counts its earlier epochs too."""
    return sum(max(float(s.get("seconds", 0.0)), float(s.get("train_seconds", 0.0))) for s in run.get("stages", []))


def training_seconds_by_device(run: dict) -> dict[str, float]:
    """Training wall time per device ('cpu', 'cuda:<GPU>', or 'unrecorded' for epochs from before devices
    were recorded), summed over the run's training stages."""
    out: dict[str, float] = {}
    for stage in run.get("stages", []):
        by_device = stage.get("train_seconds_by_device")
        if by_device is None and "train_seconds" in stage:  # a run made before devices were recorded
            by_device = {"unrecorded": stage["train_seconds"]}
        for device, seconds in (by_device or {}).items():
            out[device] = round(out.get(device, 0.0) + float(seconds), 3)
    return out


def table_runs(runs: list[dict]) -> list[str]:
    """Every run in one table: metric (torch and through the Engine), parameter counts, latency, run time."""
    out = ["## All runs (validation split)", "",
           "| run | student | KD | criterion | % pruned | metric | torch % | ONNX (Engine) % | params | nonzero | "
           "effective | Engine p50 ms (1 thread) | run time s |",
           "|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(runs, key=lambda r: (r["task"], r["name"])):
        primary, p = r["primary"], r["student"].get("params") or {}
        onnx = next((e.get("metrics") for e in r.get("onnx", []) if e.get("kind") == "fp32" and e.get("metrics")),
                    None)
        latency = (onnx or {}).get("latency_ms_p50_1thread")
        crit = r["pruning"]["criterion"] if r.get("pruning") else "-"
        out.append(f"| {r['name']} | {r['student']['model']} | {'yes' if _kd(r) else 'no'} | {crit} | "
                   f"{100 * _amount(r):g} | {primary} | {_pct(r['student']['metrics'].get(primary))} | "
                   f"{_pct(_acc(onnx, primary))} | {p.get('total')} | {p.get('nonzero')} | {p.get('effective')} | "
                   f"{'n/a' if latency is None else latency} | {run_seconds(r):.0f} |")
    return out + [""]


# One colour per criterion in every plot, with or without KD (the paper's three first, in its order).
CRITERION_COLORS = {"random": "tab:blue", "class-uniform": "tab:orange", "class-blind": "tab:green"}
_SPARE_COLORS = ("tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def criterion_color(name: str) -> str:
    if name in CRITERION_COLORS:
        return CRITERION_COLORS[name]
    return _SPARE_COLORS[sum(name.encode()) % len(_SPARE_COLORS)]  # stable across runs and plots


def draw_pruning_plot(ax, per_kd: dict, kind: str, raw: dict | None = None, reference: dict | None = None) -> None:
    """One accuracy-vs-pruning plot on `ax`. per_kd/raw: {(kd, source): {criterion: points}} after fine-tuning
    and right after pruning; reference: a `baselines` entry (teacher and 0 % lines)."""
    several = len({source for _, source in per_kd}) > 1
    for (kd, source), crit in sorted(per_kd.items(), reverse=True):
        for name, pts in sorted(crit.items()):
            xs = [100 * a if kind == "pruned" else e for a, _, e in pts]
            ax.plot(xs, [100 * v for _, v, _ in pts], marker="o", linestyle="-" if kd else "--",
                    color=criterion_color(name),
                    label=f"{name} ({'KD' if kd else 'no KD'})" + (f", {source}" if several else ""))
    if kind == "pruned":
        for (kd, source), crit in sorted((raw or {}).items(), reverse=True):
            for name, pts in sorted(crit.items()):
                ax.plot([100 * a for a, _, _ in pts], [100 * v for _, v, _ in pts], marker=".", linestyle=":",
                        color=criterion_color(name), alpha=0.8,
                        label=f"{name} ({'KD' if kd else 'no KD'}, before fine-tuning)"
                        + (f", {source}" if several else ""))
    if reference and reference.get("teacher"):
        model, acc = reference["teacher"]
        ax.axhline(100 * acc, color="black", linestyle="-.", linewidth=1, label=f"teacher ({model})")
    for kd, acc in sorted((reference or {}).get("dense", {}).items(), reverse=True):
        ax.axhline(100 * acc, color="gray", linestyle="-" if kd else "--", linewidth=1,
                   label=f"0 % pruned ({'KD' if kd else 'no KD'})")


def plot_series(series: dict, out_dir: Path, raw: dict | None = None, references: dict | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    by_task: dict = defaultdict(dict)
    raw_by_task: dict = defaultdict(dict)
    for (task, student, kd, source), crit in series.items():
        by_task[(task, student)][(kd, source)] = crit
    for (task, student, kd, source), crit in (raw or {}).items():
        raw_by_task[(task, student)][(kd, source)] = crit
    for (task, student), per_kd in sorted(by_task.items()):
        label = f"{METRIC_NAME[task]} (%)"
        for kind, xlabel in (("pruned", "% of weights pruned"), ("effective", "effective parameters")):
            fig, ax = plt.subplots(figsize=(6, 4))
            draw_pruning_plot(ax, per_kd, kind, raw_by_task.get((task, student)),
                              (references or {}).get((task, student)))
            if kind == "effective":
                ax.invert_xaxis()
            ax.set_xlabel(xlabel)
            ax.set_ylabel(label)
            ax.set_title(f"{student}: accuracy vs {xlabel}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
            fig.tight_layout()
            path = out_dir / f"{task}_{student}_acc_vs_{kind}.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            paths.append(path)
    return paths


def write_report(run_paths, out_dir) -> Path:
    runs = collect_runs(run_paths)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    series = pruning_series(runs)
    raw = no_retrain_series(runs)
    plots = plot_series(series, out, raw, baselines(runs)) if series else []
    lines = ["# robot_compress report", "",
             f"{len(runs)} finished run(s); numbers read from each run's metrics.json "
             f"(commits: {', '.join(sorted({r.get('commit', 'unknown')[:10] for r in runs}))}).", ""]
    lines += table_kd(runs) + table_pruning(series, raw) + table_segmentation(runs) + table_runs(runs)
    if plots:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    lines += ["## Runs", "", "| run | dir | dataset fingerprint |", "|---|---|---|"]
    lines += [f"| {r['name']} | {r['_dir']} | {r.get('dataset_fingerprint')} |" for r in runs]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
