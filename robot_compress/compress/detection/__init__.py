"""Object detection in the toolkit (issue 14; the model contract is docs/DETECTION.md): datasets with box
targets, torchvision's one-stage detectors behind one wrapper, their training, distillation, pruning, ONNX
export (decoded boxes + per-class scores) and COCO-style evaluation."""
