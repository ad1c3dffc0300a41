"""Detectors from torchvision's zoo (never with downloaded weights) behind one wrapper, `Detector`.

torchvision's detectors resize and normalise inside (GeneralizedRCNNTransform) and return loss dicts or
post-NMS detections. Here the data pipeline and the robot's runtime already resize to the model input size and
normalise (mean/std travel in the ONNX metadata), so the wrapper feeds the backbone directly:

- `forward(images)` in eval mode returns the contract's dense outputs (docs/DETECTION.md): `boxes [N, A, 4]`
  (decoded, x1 y1 x2 y2 in model-input pixels, clipped to the input) and `scores [N, A, C]` (per-class
  confidence, no background). This is the ONNX graph; thresholding, NMS and the top-k cut are the runtime's.
- `forward(images)` in train mode returns a `Dense` (features, head outputs, anchors) from which
  `losses(dense, targets)` computes torchvision's own detection losses, and the KD loss its terms.
- `detect(images)` is torchvision's own eval-mode output (its postprocess and NMS), labels 0-based: the
  reference the export is tested against.

Families: SSD (SSDlite head, softmax with a background column), RetinaNet (sigmoid focal loss) and FCOS
(sigmoid, centre-ness). Targets are dicts {"boxes": [K, 4] xyxy input pixels, "labels": [K] 0-based}.
Nothing here imports the rest of the toolkit: compress/models.py registers DETECTORS under task "detection".
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn


@dataclass
class Dense:
    """A train-mode forward: what the losses (detection and KD) need."""
    images: torch.Tensor
    features: list
    head: dict
    anchors: list  # per image [A, 4]
    model: nn.Module | None = None  # the Detector that made it (its losses apply)


def _pass_through_transform():
    """torchvision's transform minus resize and normalise (batching only): inputs come at the model's size,
    normalised with the dataset's mean/std, exactly as the runtime feeds the ONNX graph."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    class PassThrough(GeneralizedRCNNTransform):
        def normalize(self, image):
            return image

        def resize(self, image, target=None):
            return image, target

    return PassThrough(min_size=1, max_size=1, image_mean=[0.0] * 3, image_std=[1.0] * 3, size_divisible=1)


class Detector(nn.Module):
    """One torchvision one-stage detector (`net`) of family ssd | retinanet | fcos, wrapped as described above.

    `num_classes` counts object classes only (no background). `backbone_map` maps
    `mobilenet_v3_large().features` state-dict keys (`<i>.<rest>`) to this model's keys, for starting the
    backbone from another MobileNetV3 (e.g. the CamVid segmentation models'), when the backbone is one."""

    def __init__(self, net: nn.Module, family: str, num_classes: int, backbone_map: dict | None = None):
        super().__init__()
        if family not in ("ssd", "retinanet", "fcos"):
            raise ValueError(f"unknown detector family {family!r}")
        self.net = net
        self.family = family
        self.num_classes = int(num_classes)
        # keys of `net` as the builders see them -> this wrapper's keys
        self.backbone_map = {k: f"net.{v}" for k, v in (backbone_map or {}).items()}
        net.transform = _pass_through_transform()
        self._anchor_cache: dict = {}
        self.native_size: tuple[int, int] | None = None  # set: eval inputs of another size are resized to it

    # torchvision's thresholds, which the exported metadata and the runtime reuse
    @property
    def score_threshold(self) -> float:
        return float(self.net.score_thresh)

    @property
    def nms_iou(self) -> float:
        return float(self.net.nms_thresh)

    @property
    def max_detections(self) -> int:
        return int(self.net.detections_per_img)

    def set_postprocess(self, score_threshold=None, nms_iou=None, max_detections=None, topk_candidates=None):
        if score_threshold is not None:
            self.net.score_thresh = float(score_threshold)
        if nms_iou is not None:
            self.net.nms_thresh = float(nms_iou)
        if max_detections is not None:
            self.net.detections_per_img = int(max_detections)
        if topk_candidates is not None:
            self.net.topk_candidates = int(topk_candidates)

    # ------------------------------------------------------------------ pieces

    def features(self, images: torch.Tensor) -> list:
        feats = self.net.backbone(images)
        return [feats] if isinstance(feats, torch.Tensor) else list(feats.values())

    def anchors(self, images: torch.Tensor, features: list) -> list:
        """Per-image anchors (FCOS: one box per point) for this input size; cached outside training."""
        from torchvision.models.detection.image_list import ImageList

        h, w = int(images.shape[-2]), int(images.shape[-1])
        key = (h, w, tuple(tuple(f.shape[-2:]) for f in features), str(images.device))
        one = self._anchor_cache.get(key)
        if one is None:
            one = self.net.anchor_generator(ImageList(images[:1], [(h, w)]), features)[0].detach()
            self._anchor_cache[key] = one
        return [one] * images.shape[0]

    def dense(self, images: torch.Tensor) -> Dense:
        feats = self.features(images)
        return Dense(images, feats, self.net.head(feats), self.anchors(images, feats), self)

    def decode(self, dense: Dense) -> tuple[torch.Tensor, torch.Tensor]:
        """(boxes [N, A, 4] xyxy clipped to the input, scores [N, A, C] without background)."""
        head, anchors = dense.head, torch.stack(dense.anchors)
        n, a = anchors.shape[:2]
        reg = head["bbox_regression"]
        if self.family == "fcos":
            boxes = self.net.box_coder.decode(reg.reshape(-1, 4), anchors.reshape(-1, 4))
        else:
            boxes = self.net.box_coder.decode_single(reg.reshape(-1, 4), anchors.reshape(-1, 4))
        boxes = boxes.reshape(n, a, 4)
        h, w = dense.images.shape[-2:]
        boxes = torch.stack([boxes[..., 0].clamp(0, w), boxes[..., 1].clamp(0, h),
                             boxes[..., 2].clamp(0, w), boxes[..., 3].clamp(0, h)], dim=-1)
        return boxes, self.class_scores(head)

    def class_scores(self, head: dict) -> torch.Tensor:
        logits = head["cls_logits"]
        if self.family == "ssd":
            return torch.softmax(logits, dim=-1)[..., 1:]
        scores = torch.sigmoid(logits)
        if self.family == "fcos":
            scores = torch.sqrt(scores * torch.sigmoid(head["bbox_ctrness"]))
        return scores

    def forward(self, images: torch.Tensor):
        if self.training:
            return self.dense(images)
        native = self.native_size
        if native is not None and tuple(images.shape[-2:]) != tuple(native):
            # A teacher trained at another input size: run it at its own size, answer in the caller's pixels.
            h, w = images.shape[-2:]
            x = nn.functional.interpolate(images, size=tuple(native), mode="bilinear", align_corners=False)
            boxes, scores = self.decode(self.dense(x))
            return boxes * boxes.new_tensor([w / native[1], h / native[0], w / native[1], h / native[0]]), scores
        return self.decode(self.dense(images))

    # ------------------------------------------------------------------ training

    def tv_targets(self, targets: list) -> list:
        """Our 0-based labels -> torchvision's (SSD's softmax keeps class 0 for background)."""
        shift = 1 if self.family == "ssd" else 0
        return [{"boxes": t["boxes"].float(), "labels": t["labels"].long() + shift} for t in targets]

    def losses(self, dense: Dense, targets: list) -> dict:
        """torchvision's detection losses of this family for a train-mode forward."""
        from torchvision.ops import boxes as box_ops

        net, tv, anchors = self.net, self.tv_targets(targets), dense.anchors
        if self.family == "ssd":
            matched = []
            for anc, tgt in zip(anchors, tv, strict=True):
                if tgt["boxes"].numel() == 0:
                    matched.append(torch.full((anc.size(0),), -1, dtype=torch.int64, device=anc.device))
                else:
                    matched.append(net.proposal_matcher(box_ops.box_iou(tgt["boxes"], anc)))
            return net.compute_loss(tv, dense.head, anchors, matched)
        if self.family == "retinanet":
            return net.compute_loss(tv, dense.head, anchors)
        per_level = [f.size(2) * f.size(3) for f in dense.features]
        return net.compute_loss(tv, dense.head, anchors, per_level)

    # ------------------------------------------------------------------ reference output

    @torch.no_grad()
    def detect(self, images: torch.Tensor) -> list[dict]:
        """torchvision's own eval-mode detections (its score threshold, top-k, NMS), labels 0-based."""
        was = self.training
        self.net.eval()
        try:
            out = self.net(list(images))
        finally:
            self.net.train(was)
        shift = 1 if self.family == "ssd" else 0
        return [{"boxes": o["boxes"], "scores": o["scores"], "labels": o["labels"] - shift} for o in out]


# ---------------------------------------------------------------------------------------------- builders


def _bn_momentum(model: nn.Module, momentum: float = 0.1) -> None:
    """As for the segmentation models (compress/models.py): torchvision's detection BN momenta (0.01-0.03) are
    for long ImageNet-started schedules; trained from scratch here the running statistics would lag."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = momentum


def _mobilenet_v3(width_mult: float, reduced_tail: bool, norm_layer=None):
    from torchvision.models import mobilenet_v3_large

    kw = {"norm_layer": norm_layer} if norm_layer is not None else {}
    return mobilenet_v3_large(weights=None, width_mult=width_mult, reduced_tail=reduced_tail, **kw)


def _identity_map(features: nn.Module, model: nn.Module) -> dict:
    """`features` state-dict key -> the key of the same tensor object inside `model` (the extractors keep the
    MobileNetV3 modules by reference, so identity gives the exact mapping whatever they re-nest)."""
    by_id = {id(t): k for k, t in model.state_dict(keep_vars=True).items()}
    return {k: by_id[id(t)] for k, t in features.state_dict(keep_vars=True).items() if id(t) in by_id}


def _postprocess_defaults(net, score_threshold, nms_iou, max_detections, topk_candidates):
    net.score_thresh, net.nms_thresh = float(score_threshold), float(nms_iou)
    net.detections_per_img, net.topk_candidates = int(max_detections), int(topk_candidates)


def ssdlite_mobilenet_v3_large(num_classes: int, width_mult: float = 1.0, reduced_tail: bool = False,
                               score_threshold: float = 0.3, nms_iou: float = 0.5, max_detections: int = 100,
                               topk_candidates: int = 300) -> Detector:
    """SSDlite (MobileNetV3-Large, width `width_mult`) as torchvision builds ssdlite320_mobilenet_v3_large,
    without downloaded weights. reduced_tail=False keeps the full C5 so a CamVid MobileNetV3's tail fits."""
    from torchvision.models.detection import _utils as det_utils
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssd import SSD
    from torchvision.models.detection.ssdlite import SSDLiteHead, _mobilenet_extractor, _normal_init

    norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    mb = _mobilenet_v3(width_mult, reduced_tail, norm_layer)
    _normal_init(mb)
    features = mb.features
    backbone = _mobilenet_extractor(mb, 6, norm_layer)
    size = (320, 320)
    anchor_generator = DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=0.2, max_ratio=0.95)
    out_channels = det_utils.retrieve_out_channels(backbone, size)
    head = SSDLiteHead(out_channels, anchor_generator.num_anchors_per_location(), num_classes + 1, norm_layer)
    net = SSD(backbone, anchor_generator, size, num_classes + 1, head=head, image_mean=[0.0] * 3,
              image_std=[1.0] * 3)
    _postprocess_defaults(net, score_threshold, nms_iou, max_detections, topk_candidates)
    _bn_momentum(net)
    return Detector(net, "ssd", num_classes, _identity_map(features, net))


def _mobilenet_fpn(width_mult: float):
    from torchvision.models.detection.backbone_utils import _mobilenet_extractor
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    mb = _mobilenet_v3(width_mult, reduced_tail=False)
    features = mb.features
    # C4 (stride 16) and C5 (stride 32) into a 256-channel FPN with P6/P7: five levels, strides 16..256... the
    # returned stages are MobileNetV3's last two strided ones, as torchvision's Faster R-CNN MobileNet-FPN.
    backbone = _mobilenet_extractor(mb, True, 6, returned_layers=[3, 4, 5], extra_blocks=LastLevelP6P7(256, 256))
    return backbone, features


def _resnet_fpn(depth: int, extra_in: int = 256):
    from torchvision.models import resnet18, resnet50
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    res = {18: resnet18, 50: resnet50}[depth](weights=None)
    return _resnet_fpn_extractor(res, 5, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(extra_in, 256))


def _levels_anchorgen(levels: int, base: int = 32, fcos: bool = False):
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    if fcos:
        return AnchorGenerator(tuple((base // 4 * 2 ** i,) for i in range(levels)), ((1.0,),) * levels)
    sizes = tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))) for x in [base * 2 ** i for i in range(levels)])
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * levels)


def _one_stage(family: str, backbone, num_classes: int, levels: int, anchor_base: int, score_threshold, nms_iou,
               max_detections, topk_candidates):
    from torchvision.models.detection import FCOS, RetinaNet

    kw = {"image_mean": [0.0] * 3, "image_std": [1.0] * 3, "min_size": 1, "max_size": 1}
    if family == "retinanet":
        net = RetinaNet(backbone, num_classes, anchor_generator=_levels_anchorgen(levels, anchor_base), **kw)
    else:
        net = FCOS(backbone, num_classes, anchor_generator=_levels_anchorgen(levels, anchor_base, fcos=True), **kw)
    _postprocess_defaults(net, score_threshold, nms_iou, max_detections, topk_candidates)
    _bn_momentum(net)
    return net


def _register_fpn(family: str, backbone_name: str):
    def build(num_classes: int, width_mult: float = 1.0, score_threshold: float = 0.3, nms_iou: float = 0.5,
              max_detections: int = 100, topk_candidates: int = 1000) -> Detector:
        if backbone_name == "mobilenet_v3_large":
            backbone, features = _mobilenet_fpn(width_mult)
            # Strides 16, 32, 64, 128 (P6), 256 (P7): anchors start at 64 px. Pedestrians at 320-640 px inputs
            # are 30-400 px tall, so the first level's base is 32.
            net = _one_stage(family, backbone, num_classes, 5, 32, score_threshold, nms_iou, max_detections,
                             topk_candidates)
            return Detector(net, family, num_classes, _identity_map(features, net))
        depth = int(backbone_name.removeprefix("resnet"))
        backbone = _resnet_fpn(depth, 256)
        net = _one_stage(family, backbone, num_classes, 5, 32, score_threshold, nms_iou, max_detections,
                         topk_candidates)
        return Detector(net, family, num_classes)

    build.__name__ = f"{family}_{backbone_name}_fpn"
    build.__doc__ = f"{family} on a {backbone_name} FPN, random weights (nothing downloaded)."
    return build


DETECTORS: dict[str, Callable[..., Detector]] = {
    "ssdlite_mobilenet_v3_large": ssdlite_mobilenet_v3_large,
}
for _family in ("retinanet", "fcos"):
    for _bb in ("mobilenet_v3_large", "resnet18", "resnet50"):
        _b = _register_fpn(_family, _bb)
        DETECTORS[_b.__name__] = _b


def tiny_detector(num_classes: int, width: int = 8, score_threshold: float = 0.3, nms_iou: float = 0.5,
                  max_detections: int = 50, topk_candidates: int = 200, family: str = "ssd") -> Detector:
    """A few-thousand-parameter detector for tests (two small conv levels, SSDlite-style or FCOS head)."""
    from collections import OrderedDict

    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.fcos import FCOS
    from torchvision.models.detection.ssd import SSD
    from torchvision.models.detection.ssdlite import SSDLiteHead

    class TinyBackbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
                                      nn.Conv2d(width, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU())
            self.down = nn.Sequential(nn.Conv2d(width, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU())
            self.out_channels = width

        def forward(self, x):
            a = self.stem(x)
            return OrderedDict([("0", a), ("1", self.down(a))])

    backbone = TinyBackbone()
    if family == "ssd":
        gen = DefaultBoxGenerator([[2], [2]], min_ratio=0.3, max_ratio=0.9)
        head = SSDLiteHead([width, width], gen.num_anchors_per_location(), num_classes + 1,
                           partial(nn.BatchNorm2d, eps=0.001, momentum=0.1))
        net = SSD(backbone, gen, (64, 64), num_classes + 1, head=head, image_mean=[0.0] * 3, image_std=[1.0] * 3)
    elif family == "fcos":
        from torchvision.models.detection.anchor_utils import AnchorGenerator

        if width % 32:
            raise ValueError(f"tiny_detector family fcos needs a width divisible by 32 (GroupNorm(32)), got {width}")

        gen = AnchorGenerator(((8,), (16,)), ((1.0,), (1.0,)))
        from torchvision.models.detection.fcos import FCOSHead

        head = FCOSHead(width, 1, num_classes, num_convs=1)
        net = FCOS(backbone, num_classes, anchor_generator=gen, head=head, image_mean=[0.0] * 3, image_std=[1.0] * 3,
                   min_size=1, max_size=1)
    else:
        raise ValueError(f"tiny_detector family must be ssd or fcos, got {family!r}")
    _postprocess_defaults(net, score_threshold, nms_iou, max_detections, topk_candidates)
    return Detector(net, family, num_classes)


DETECTORS["tiny_detector"] = tiny_detector
