"""Knowledge distillation for detectors after Chen et al., "Learning Efficient Object Detection Models with
Knowledge Distillation" (NeurIPS 2017), for one-stage students whose anchors differ from the teacher's.

    loss = (1 - alpha) * L_cls_hard + alpha * T^2 * L_soft     (classification: labels and teacher soft labels)
         + L_reg_hard + nu * L_bounded                         (regression: smooth-L1/GIoU + teacher-bounded L2)
         + the family's other terms (FCOS centre-ness) unchanged

`L_cls_hard`, `L_reg_hard` are torchvision's own losses of the student's family (what `kd: false` trains with).

Teacher and student differ in anchors (SSDlite default boxes vs FCOS points or RetinaNet anchors, at other
strides, even another input size), so the soft labels are taken where the literature takes them when the
proposals differ: on the **student's** anchors, from the teacher's predictions matched to them. The teacher's
dense decoded predictions (its export outputs: boxes + per-class scores, before NMS) are cut to its `top_k`
highest-scoring candidates; each student anchor takes the candidate with the highest IoU with it. An anchor
matched at IoU >= `match_iou` gets that candidate's class scores as its soft label; any other anchor gets "no
object" (all class scores 0), which is what the teacher says there.

- Softmax students (SSD): the teacher's scores s_c become a distribution over [background, classes]
  (background 1 - sum s_c, clipped at 0, renormalised), sharpened or softened by T (q^(1/T), renormalised; for a
  softmax teacher that is softmax(logits / T)), against log_softmax(student / T). Chen's class-weighted cross
  entropy: background weight `background_weight` (1.5 as in the paper). Averaged over the matched anchors plus the
  3x as many hardest unmatched ones (SSD's own negative mining).
- Sigmoid students (RetinaNet, FCOS): per-class binary cross entropy between sigmoid(student / T) and the
  teacher's score at temperature T (sigmoid(logit(s) / T)), summed over anchors and classes, normalised by the
  number of matched anchors (as the focal loss is by its foreground anchors).
- Teacher-bounded regression (Chen eq. 3) on the anchors the student's own matcher makes positive (IoU with a
  ground-truth box >= 0.5) that also have a matched teacher box: with b the box error normalised by the anchor's
  width/height, L_b = ||b_s - y||^2 when ||b_s - y||^2 + margin > ||b_t - y||^2, else 0: the student is pushed
  on a box only where it is not yet better than the teacher (margin 0 by default), averaged over those anchors.

Feature hints (the paper's third term) are not implemented: the student's and teacher's backbones differ in
strides and widths, which would need an adaptation layer outside the exported model.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def match_teacher(anchors: torch.Tensor, t_boxes: torch.Tensor, t_scores: torch.Tensor, top_k: int = 1000,
                  match_iou: float = 0.5):
    """For each student anchor [A, 4]: (soft class scores [A, C] from the best-overlapping teacher candidate,
    or zeros; its box [A, 4]; matched mask [A])."""
    from torchvision.ops import box_iou

    k = min(int(top_k), t_scores.shape[0])
    best = t_scores.max(dim=1).values
    idx = best.topk(k).indices if k < best.numel() else torch.arange(best.numel(), device=best.device)
    cand_boxes, cand_scores = t_boxes[idx], t_scores[idx]
    valid = (cand_boxes[:, 2] > cand_boxes[:, 0]) & (cand_boxes[:, 3] > cand_boxes[:, 1])
    iou = box_iou(anchors, cand_boxes) * valid[None, :]
    top_iou, j = iou.max(dim=1)
    matched = top_iou >= match_iou
    soft = torch.where(matched[:, None], cand_scores[j], torch.zeros_like(cand_scores[j]))
    return soft, cand_boxes[j], matched


def _normalised_error(boxes: torch.Tensor, gt: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    wh = (anchors[:, 2:] - anchors[:, :2]).clamp(min=1e-3).repeat(1, 2)
    return ((boxes - gt) / wh).pow(2).sum(dim=1)


def soft_loss_softmax(logits, soft, matched, temperature: float, background_weight: float = 1.5,
                      neg_ratio: int = 3) -> torch.Tensor:
    """Chen's weighted soft cross entropy on a softmax student (column 0 = background) for one image."""
    t = temperature
    bg = (1.0 - soft.sum(dim=1, keepdim=True)).clamp(min=0.0)
    q = torch.cat([bg, soft], dim=1).clamp(min=1e-6).pow(1.0 / t)
    q = q / q.sum(dim=1, keepdim=True)
    logp = F.log_softmax(logits / t, dim=1)
    w = torch.ones(q.shape[1], device=q.device, dtype=q.dtype)
    w[0] = background_weight
    per_anchor = -(w * q * logp).sum(dim=1)
    n_pos = int(matched.sum())
    n_neg = min(max(neg_ratio * n_pos, neg_ratio), int((~matched).sum()))
    neg_loss = torch.where(matched, torch.full_like(per_anchor, -1.0), per_anchor.detach())
    hard = neg_loss.topk(n_neg).indices if n_neg > 0 else neg_loss.new_zeros(0, dtype=torch.long)
    chosen = torch.cat([per_anchor[matched], per_anchor[hard]])
    return chosen.mean() if chosen.numel() else logits.sum() * 0.0


def soft_loss_sigmoid(logits, soft, matched, temperature: float) -> torch.Tensor:
    """Per-class binary cross entropy at temperature T on a sigmoid student for one image."""
    t = temperature
    target = torch.sigmoid(torch.logit(soft.clamp(1e-4, 1 - 1e-4)) / t)
    bce = F.binary_cross_entropy_with_logits(logits / t, target, reduction="sum")
    return bce / max(1, int(matched.sum()))


def bounded_regression(student_boxes, teacher_boxes, anchors, gt_boxes, matched_teacher, positive_gt,
                       margin: float = 0.0) -> torch.Tensor:
    """Chen's teacher-bounded L2 regression loss for one image (see the module docstring)."""
    use = matched_teacher & (positive_gt >= 0)
    if not bool(use.any()):
        return student_boxes.sum() * 0.0
    gt = gt_boxes[positive_gt[use]]
    a = anchors[use]
    err_s = _normalised_error(student_boxes[use], gt, a)
    err_t = _normalised_error(teacher_boxes[use], gt, a)
    return torch.where(err_s + margin > err_t, err_s, torch.zeros_like(err_s)).mean()


def detection_kd_loss(temperature: float = 2.0, alpha: float = 0.5, *, nu: float = 0.5, margin: float = 0.0,
                      top_k: int = 1000, match_iou: float = 0.5, background_weight: float = 1.5,
                      parts_out: dict | None = None) -> Callable:
    """`loss(dense, targets, teacher_out)`: the student's `Dense`, the batch's Targets and the teacher's eval
    outputs (boxes [N, At, 4] in the student's input pixels, scores [N, At, C]). `parts_out`, when given, receives
    the last batch's terms (for tests and logs)."""
    from torchvision.ops import box_iou

    def loss(dense, targets, teacher_out):
        model = dense.model
        targets = list(targets)
        parts = model.losses(dense, targets)
        if teacher_out is None:
            raise ValueError("detection KD needs the teacher's outputs (a teacher in the recipe)")
        t_boxes, t_scores = (t.detach().float() for t in teacher_out)
        s_boxes, _ = model.decode(dense)
        logits = dense.head["cls_logits"]
        soft_terms, bounded_terms = [], []
        for i, target in enumerate(targets):
            anchors = dense.anchors[i]
            soft, tbox, matched = match_teacher(anchors, t_boxes[i], t_scores[i], top_k, match_iou)
            if model.family == "ssd":
                soft_terms.append(soft_loss_softmax(logits[i], soft, matched, temperature, background_weight))
            else:
                soft_terms.append(soft_loss_sigmoid(logits[i], soft, matched, temperature))
            gt = target["boxes"].float()
            if gt.numel():
                iou = box_iou(gt, anchors)
                best, which = iou.max(dim=0)
                positive = torch.where(best >= 0.5, which, torch.full_like(which, -1))
            else:
                positive = torch.full((anchors.shape[0],), -1, dtype=torch.long, device=anchors.device)
            bounded_terms.append(bounded_regression(s_boxes[i], tbox, anchors, gt, matched, positive, margin))
        soft_loss = torch.stack(soft_terms).mean()
        bounded = torch.stack(bounded_terms).mean()
        cls = (1.0 - alpha) * parts["classification"] + alpha * temperature ** 2 * soft_loss
        reg = parts["bbox_regression"] + nu * bounded
        rest = sum(v for k, v in parts.items() if k not in ("classification", "bbox_regression"))
        if parts_out is not None:
            parts_out.clear()
            parts_out.update({k: float(v.detach()) for k, v in parts.items()},
                             soft=float(soft_loss.detach()), bounded=float(bounded.detach()))
        return cls + reg + rest

    return loss
