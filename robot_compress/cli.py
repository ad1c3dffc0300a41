"""`robot-compress`: one command, many tools. Subcommands are imported lazily so that robot-side
tools (replay, serve, bag-from-frames, score) run without torch, and toolkit commands explain how to
install the `compress` extra when torch is missing.

Each subcommand lives in a module exposing `run(command: str, argv: list[str]) -> int`.
"""
from __future__ import annotations

import importlib
import sys

# name -> (module, one-line help). Toolkit commands need torch; the rest do not.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("robot_compress.compress.cli", "train a teacher or student from scratch"),
    "distill": ("robot_compress.compress.cli", "knowledge-distil a student from a teacher"),
    "prune": ("robot_compress.compress.cli", "prune (random | class-uniform | class-blind | structured)"),
    "finetune": ("robot_compress.compress.cli", "fine-tune a (pruned) model, keeping its masks"),
    "evaluate": ("robot_compress.compress.cli", "top-1/top-5 or pixel accuracy + mIoU of a checkpoint or ONNX"),
    "export": ("robot_compress.compress.cli", "export ONNX with the runtime metadata contract + model card"),
    "quantize": ("robot_compress.compress.cli", "INT8 post-training static quantization of an ONNX model"),
    "run": ("robot_compress.compress.cli", "run a whole pipeline from a recipe YAML"),
    "sweep": ("robot_compress.compress.cli", "grid over pruning criteria x amounts x KD on/off"),
    "report": ("robot_compress.compress.cli", "tables and plots from run outputs"),
    "serve": ("robot_compress.tools.serve", "start the edge inference server (KServe v2) on 127.0.0.1"),
    "replay": ("robot_compress.tools.replay", "replay a rosbag2 bag into the perception node, record outputs"),
    "bag-from-frames": ("robot_compress.tools.bag_from_frames", "build a rosbag2 bag from a video or image folder"),
    "score": ("robot_compress.tools.score", "score recorded outputs against labels"),
}
TOOLKIT_MODULE = "robot_compress.compress.cli"


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: robot-compress COMMAND [options]   (robot-compress COMMAND --help)", "", "commands:"]
    lines += [f"  {name:<{width}}  {desc}" for name, (_, desc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"robot-compress: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name = COMMANDS[command][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if module_name == TOOLKIT_MODULE and missing in ("torch", "torchvision", "torch_pruning"):
            print(
                f"robot-compress {command}: needs the offline toolkit ({exc.name} is not installed); "
                "install it with: pip install -r requirements/compress.txt",
                file=sys.stderr,
            )
            return 2
        raise
    return int(module.run(command, rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
