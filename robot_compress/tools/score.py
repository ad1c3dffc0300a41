"""`robot-compress score OUT_BAG`: compare recorded node outputs with the labels the source bag carried.

Outputs and labels are matched by header (stamp, frame_id). Segmentation: the mono8 mask topic against
/labels/mask, global pixel accuracy and mIoU per frame and overall (one confusion matrix over all frames,
robot_compress.runtime.metrics; the void id is not scored). Classification: top-1 of the result JSON
against /labels/class. Detection: the `detections` of the result JSON against the boxes on /labels/boxes,
COCO AP (IoU 0.50:0.95), AP50 and AP75 over the answered frames (runtime/detection_eval.py, pycocotools'
COCOeval: the toolkit's metric). Labels are read from the output bag (replay copies them) or from
`--labels-bag`. Labelled frames without an output are reported as unanswered, never silently skipped.
Segmentation and detection are also scored per answering source (`edge` / `local`, from the result JSON of the
same frame), so a run with edge offload shows what the edge teacher buys over the robot's student.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field

from robot_compress.runtime import metrics
from robot_compress.tools import bags
from robot_compress.tools.replay import DEFAULT_MASK_TOPIC, DEFAULT_RESULT_TOPIC


class ScoreError(bags.BagError):
    """Outputs and labels cannot be compared; the message names why."""


@dataclass
class Score:
    task: str
    frames_labelled: int
    frames_scored: int
    unanswered: int
    overall: dict = field(default_factory=dict)  # pixel_acc, miou | ap, ap50, ap75 | top1
    per_frame: list[dict] = field(default_factory=list)
    by_source: dict = field(default_factory=dict)  # source -> {frames, pixel_acc, miou} or {frames, ap, ap50, ap75}


def _key(header) -> tuple[int, str]:
    return bags.stamp_to_ns(header.stamp), header.frame_id


def _label_source(out_bag, labels_bag):
    """(reader path, bag_info) for the bag holding labels."""
    for path in ([labels_bag] if labels_bag else [out_bag]):
        with bags.BagReader(path) as reader:
            info = reader.info()
            topics = reader.topics
        if any(t in topics for t in bags.LABEL_TOPICS):
            return path, info
    where = labels_bag or out_bag
    raise ScoreError(f"no labels in {where}: expected {', '.join(bags.LABEL_TOPICS)} "
                     "(build the source bag from a labelled source, e.g. bag-from-frames --labels, or Penn-Fudan)")


def score(out_bag, labels_bag=None, mask_topic: str = DEFAULT_MASK_TOPIC, result_topic: str = DEFAULT_RESULT_TOPIC,
          num_classes: int | None = None, ignore_index: int | None = None) -> Score:
    label_path, info = _label_source(out_bag, labels_bag)
    with bags.BagReader(label_path) as reader:
        if bags.LABEL_MASK_TOPIC in reader.topics:
            labels = {_key(m.header): bags.mono8_to_array(m) for m in
                      (reader.decode(raw, mt) for _, mt, _, raw in reader.messages([bags.LABEL_MASK_TOPIC]))}
            task = "segmentation"
        elif bags.LABEL_BOXES_TOPIC in reader.topics:
            labels = reader.box_labels()
            task = "detection"
        else:
            labels = {}
            for _, mt, _, raw in reader.messages([bags.LABEL_CLASS_TOPIC]):
                rec = json.loads(reader.decode(raw, mt).data)
                labels[(rec["stamp"]["sec"] * 1_000_000_000 + rec["stamp"]["nanosec"], rec["frame_id"])] = rec["label"]
            task = "classification"
    if not labels:
        raise ScoreError(f"the label topic in {label_path} holds no messages")
    with bags.BagReader(out_bag) as reader:
        if task == "segmentation":
            sources = _sources(reader, result_topic)
            return _score_segmentation(reader, labels, info, mask_topic, num_classes, ignore_index, sources)
        if task == "detection":
            return _score_detection(reader, labels, info, result_topic)
        return _score_classification(reader, labels, result_topic)


def _sources(reader, result_topic) -> dict:
    """(stamp_ns, frame_id) -> the source that answered that frame (empty without a result topic)."""
    if result_topic not in reader.topics:
        return {}
    out = {}
    for _, mt, _, raw in reader.messages([result_topic]):
        rec = json.loads(reader.decode(raw, mt).data)
        out.setdefault((rec["stamp"]["sec"] * 1_000_000_000 + rec["stamp"]["nanosec"], rec["frame_id"]),
                       rec.get("source", "unknown"))
    return out


def _score_segmentation(reader, labels, info, mask_topic, num_classes, ignore_index, sources=None) -> Score:
    topic = reader.topics.get(mask_topic)
    if topic is None:
        raise ScoreError(f"mask topic {mask_topic} not in {reader.path}; it has: {', '.join(sorted(reader.topics))}")
    if topic.msgtype != bags.IMAGE:
        raise ScoreError(f"mask topic {mask_topic} holds {topic.msgtype}, not a mono8 sensor_msgs/Image")
    names = info.get("class_names")
    num_classes = num_classes or (len(names) if names else None)
    if num_classes is None:
        raise ScoreError("the bag does not name its classes (bag_info class_names); pass --num-classes")
    if ignore_index is None:
        ignore_index = info.get("ignore_index")
    meter = metrics.SegmentationMeter(num_classes, ignore_index)
    by_source: dict[str, metrics.SegmentationMeter] = {}
    counts: dict[str, int] = {}
    per_frame, seen = [], set()
    for _, mt, _, raw in reader.messages([mask_topic]):
        msg = reader.decode(raw, mt)
        key = _key(msg.header)
        if key not in labels or key in seen:
            continue  # an output for an unlabelled frame (or a duplicate) is not scored
        seen.add(key)
        pred, target = bags.mono8_to_array(msg), labels[key]
        if pred.shape != target.shape:
            raise ScoreError(f"mask {pred.shape} and label {target.shape} differ in size for stamp {key[0]} ns")
        try:
            cm = metrics.confusion_matrix(pred, target, num_classes, ignore_index)
        except ValueError as exc:
            raise ScoreError(f"frame at stamp {key[0]} ns: {exc}") from None
        meter.cm += cm
        source = (sources or {}).get(key, "unknown")
        by_source.setdefault(source, metrics.SegmentationMeter(num_classes, ignore_index)).cm += cm
        counts[source] = counts.get(source, 0) + 1
        per_frame.append({"stamp_ns": key[0], "frame_id": key[1], "pixel_acc": metrics.pixel_accuracy(cm),
                          "miou": metrics.mean_iou(cm), "source": source})
    per_frame.sort(key=lambda r: r["stamp_ns"])
    overall = meter.compute()
    sources_scored = {src: {"frames": counts[src], "pixel_acc": m.compute()["pixel_acc"], "miou": m.compute()["miou"]}
                      for src, m in sorted(by_source.items())}
    return Score("segmentation", len(labels), len(seen), len(labels) - len(seen),
                 {"pixel_acc": overall["pixel_acc"], "miou": overall["miou"],
                  "iou_per_class": overall["iou_per_class"], "class_names": names}, per_frame, sources_scored)


def _class_names(info: dict, labels: dict, results: list[dict]) -> list[str]:
    """The bag's class names, else the class ids and labels seen in the ground truth and the detections."""
    if info.get("class_names"):
        return list(info["class_names"])
    seen = {int(o["class_id"]): o["label"] for objs in labels.values() for o in objs}
    seen.update({int(d["class_id"]): d["label"] for r in results for d in r["detections"]})
    if not seen or sorted(seen) != list(range(len(seen))):
        raise ScoreError("the bag does not name its classes (bag_info class_names) and the class ids seen "
                         f"({sorted(seen)}) are not 0..K-1")
    return [seen[i] for i in range(len(seen))]


def _score_detection(reader, labels, info, result_topic) -> Score:
    """COCO AP/AP50/AP75 of the answered labelled frames, overall and per answering source."""
    from robot_compress.runtime.detection_eval import DetectionScorer

    if result_topic not in reader.topics:
        raise ScoreError(f"result topic {result_topic} not in {reader.path}; it has: "
                         f"{', '.join(sorted(reader.topics))}")
    answered, seen = [], set()
    for _, mt, _, raw in reader.messages([result_topic]):
        rec = json.loads(reader.decode(raw, mt).data)
        key = (rec["stamp"]["sec"] * 1_000_000_000 + rec["stamp"]["nanosec"], rec["frame_id"])
        if key not in labels or key in seen:
            continue  # an output for an unlabelled frame (or a duplicate) is not scored
        if "detections" not in rec:
            raise ScoreError(f"the result for stamp {key[0]} ns is a {rec.get('task')!r} result without "
                             "detections; the bag's labels are boxes")
        seen.add(key)
        answered.append((key, rec))
    names = _class_names(info, labels, [rec for _, rec in answered])
    overall, by_source = DetectionScorer(names), {}
    per_frame = []
    try:
        for key, rec in answered:
            source = rec.get("source", "unknown")
            overall.add(key, labels[key], rec["detections"])
            by_source.setdefault(source, DetectionScorer(names)).add(key, labels[key], rec["detections"])
            per_frame.append({"stamp_ns": key[0], "frame_id": key[1], "source": source,
                              "objects": sum(1 for o in labels[key] if not (o.get("iscrowd") or o.get("ignore"))),
                              "detections": len(rec["detections"])})
    except ValueError as exc:  # a box or class the scorer refuses
        raise ScoreError(f"frame at stamp {key[0]} ns: {exc}") from None
    per_frame.sort(key=lambda r: r["stamp_ns"])
    m = overall.compute()
    sources_scored = {}
    for src, scorer in sorted(by_source.items()):
        v = scorer.compute()
        sources_scored[src] = {"frames": v["images"], "ap": v["ap"], "ap50": v["ap50"], "ap75": v["ap75"]}
    return Score("detection", len(labels), len(seen), len(labels) - len(seen),
                 {"ap": m["ap"], "ap50": m["ap50"], "ap75": m["ap75"], "ap50_per_class": m["ap50_per_class"],
                  "ground_truth": m["ground_truth"], "detections": m["detections"], "class_names": names},
                 per_frame, sources_scored)


def _score_classification(reader, labels, result_topic) -> Score:
    if result_topic not in reader.topics:
        raise ScoreError(f"result topic {result_topic} not in {reader.path}")
    per_frame, seen, correct = [], set(), 0
    for _, mt, _, raw in reader.messages([result_topic]):
        rec = json.loads(reader.decode(raw, mt).data)
        key = (rec["stamp"]["sec"] * 1_000_000_000 + rec["stamp"]["nanosec"], rec["frame_id"])
        if key not in labels or key in seen or not rec.get("top_k"):
            continue
        seen.add(key)
        hit = rec["top_k"][0]["label"] == labels[key]
        correct += hit
        per_frame.append({"stamp_ns": key[0], "frame_id": key[1], "top1": float(hit),
                          "predicted": rec["top_k"][0]["label"], "label": labels[key]})
    per_frame.sort(key=lambda r: r["stamp_ns"])
    top1 = correct / len(seen) if seen else math.nan
    return Score("classification", len(labels), len(seen), len(labels) - len(seen), {"top1": top1}, per_frame)


def format_score(s: Score, per_frame: bool = False) -> str:
    lines = [f"task: {s.task}; labelled frames: {s.frames_labelled}; scored: {s.frames_scored}; "
             f"unanswered: {s.unanswered}"]
    if s.task == "segmentation":
        lines.append(f"overall: pixel accuracy {s.overall['pixel_acc']:.4f}, mIoU {s.overall['miou']:.4f}")
        if len(s.by_source) > 1 or "unknown" not in s.by_source:
            lines += [f"  from {src}: pixel accuracy {v['pixel_acc']:.4f}, mIoU {v['miou']:.4f} over {v['frames']} "
                      f"frames" for src, v in s.by_source.items()]
        if per_frame:
            lines += [f"  {r['stamp_ns']:>20} {r['frame_id']:<12} acc {r['pixel_acc']:.4f} mIoU {r['miou']:.4f}"
                      for r in s.per_frame]
    elif s.task == "detection":
        lines.append(f"overall: AP50 {s.overall['ap50']:.4f}, AP {s.overall['ap']:.4f}, AP75 {s.overall['ap75']:.4f} "
                     f"({s.overall['detections']} detections, {s.overall['ground_truth']} labelled objects)")
        if len(s.by_source) > 1 or "unknown" not in s.by_source:
            lines += [f"  from {src}: AP50 {v['ap50']:.4f}, AP {v['ap']:.4f} over {v['frames']} frames"
                      for src, v in s.by_source.items()]
        if per_frame:
            lines += [f"  {r['stamp_ns']:>20} {r['frame_id']:<12} {r['source']:<6} {r['detections']} detections, "
                      f"{r['objects']} objects" for r in s.per_frame]
    else:
        lines.append(f"overall: top-1 {s.overall['top1']:.4f}")
        if per_frame:
            lines += [f"  {r['stamp_ns']:>20} {r['frame_id']:<12} {r['predicted']} vs {r['label']}"
                      for r in s.per_frame]
    return "\n".join(lines)


def run(command: str, argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog=f"robot-compress {command}", description=__doc__.split("\n\n")[0])
    p.add_argument("bag", help="output bag recorded by `robot-compress replay -o`")
    p.add_argument("--labels-bag", help="bag holding the labels (default: the output bag itself)")
    p.add_argument("--mask-topic", default=DEFAULT_MASK_TOPIC)
    p.add_argument("--result-topic", default=DEFAULT_RESULT_TOPIC)
    p.add_argument("--num-classes", type=int, help="override the class count from the bag's provenance")
    p.add_argument("--ignore-index", type=int, help="override the void label id")
    p.add_argument("--per-frame", action="store_true", help="print one line per frame")
    p.add_argument("--json", help="also write the full score as JSON here")
    args = p.parse_args(argv)
    try:
        s = score(args.bag, args.labels_bag, args.mask_topic, args.result_topic, args.num_classes, args.ignore_index)
    except bags.BagError as exc:
        print(f"robot-compress {command}: error: {exc}", file=sys.stderr)
        return 1
    print(format_score(s, args.per_frame))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(s.__dict__, f, indent=1)
    return 0 if s.frames_scored else 1
