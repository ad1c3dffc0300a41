"""The names the edge client (runtime/edge_client.py) and the edge server (tools/serve.py) agree on.

Standard library only: the node's parameter table and the server's argument parser import it before anything
heavy. A served model is named `{model_id}{PAYLOAD_SUFFIX[payload]}` and takes the input `INPUT_NAME[payload]`.
"""
from __future__ import annotations

PAYLOADS = ("raw", "jpeg", "float")  # how a frame travels: RGB uint8, JPEG bytes, preprocessed float tensor
PAYLOAD_SUFFIX = {"raw": "", "jpeg": "__jpeg", "float": "__float"}
INPUT_NAME = {"raw": "image", "jpeg": "jpeg", "float": "tensor"}


def served_name(model_id: str, payload: str) -> str:
    return model_id + PAYLOAD_SUFFIX[payload]
