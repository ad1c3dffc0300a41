"""Which inference resolution wins for the CamVid student: the label-trained LR-ASPP exported at several input
sizes, each scored on CamVid's own val split at 360x480 (frame resized in, mask resized back, as the node does) and
timed on 360x480 camera frames through Engine.infer, one thread, side by side in one run. Prints a table; asserts
nothing. Needs torch, ../shared CamVid and a finished camvid_student_labels run.

    .venv/bin/python bench/camvid_resolution.py [--checkpoint runs/camvid_student_labels/student.pt]
        [--sizes 360x480 288x384 240x320 180x240] [--runs 60]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CAMVID = REPO.parent / "shared" / "data" / "camvid-trainval.zip"


def _size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def measure(model, size, val, frame, tmp: Path, runs: int) -> dict:
    """Export at `size`, score on the val frames at their own size, time Engine.infer on one camera frame."""
    from dataclasses import replace

    from robot_compress.compress.evaluate import engine_latency, evaluate_onnx
    from robot_compress.compress.export import export_onnx

    info = replace(val.info, input_size=size)
    path = export_onnx(model, tmp / f"student_{size[0]}x{size[1]}.onnx", info, model_id="resolution_probe",
                       recipe="bench/camvid_resolution.py", verify_batches=1, atol=1e-2).path
    metrics = evaluate_onnx(path, val, at_frame_size=True)
    p50 = engine_latency(path, frame, runs=runs, full_frame=True)["latency_ms_p50_1thread"]
    return {"size": size, "pixel_acc": metrics["pixel_acc"], "miou": metrics["miou"], "p50_ms": p50,
            "fps": 1000.0 / p50}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(REPO / "runs" / "camvid_student_labels" / "student.pt"))
    ap.add_argument("--sizes", nargs="+", type=_size, default=[(360, 480), (288, 384), (240, 320), (180, 240)])
    ap.add_argument("--runs", type=int, default=60)
    args = ap.parse_args(argv)
    if not CAMVID.is_file() or not Path(args.checkpoint).is_file():
        print(f"needs {CAMVID} and {args.checkpoint}", file=sys.stderr)
        return 2
    import torch

    from robot_compress.compress.data import load_dataset
    from robot_compress.compress.models import get_model
    from robot_compress.compress.train import load_weights, read_checkpoint

    torch.set_num_threads(1)
    state = read_checkpoint(args.checkpoint)
    model = get_model(state["model_name"], state["num_classes"], **state.get("model_cfg", {}))
    load_weights(model, args.checkpoint)
    val, _ = load_dataset("camvid", str(CAMVID), input_size=(360, 480), train=False, split="val", raw_uint8=True,
                          native=True)
    frame = np.ascontiguousarray(val[0][0])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            rows.append(measure(model, size, val, frame, Path(tmp), args.runs))
            print(f"  {size[0]}x{size[1]} done", file=sys.stderr, flush=True)
    print(f"CamVid val (101 frames) scored at 360x480; Engine.infer on a 360x480 frame, 1 thread, p50 of "
          f"{args.runs}; checkpoint {args.checkpoint}")
    print("")
    print("| model input | pixel acc % | mIoU % | Engine.infer p50 ms | frames/s |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['size'][0]}x{r['size'][1]} | {100 * r['pixel_acc']:.2f} | {100 * r['miou']:.2f} | "
              f"{r['p50_ms']:.1f} | {r['fps']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
