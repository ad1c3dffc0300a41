"""Detection datasets: Penn-Fudan (skipped without ../shared), COCO-JSON and VOC-XML fixtures written here, the
synthetic set, the by-image validation carve, box-aware augmentation and batching."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from conftest import shared_path  # noqa: E402

from robot_compress.compress.data import DatasetError, SegAugment  # noqa: E402
from robot_compress.compress.detection.data import (  # noqa: E402
    Targets,
    augment_detection,
    carve_every,
    detection_collate,
    load_detection_dataset,
    load_detection_splits,
    parse_voc_xml,
)
from robot_compress.compress.recipe import DataSpec  # noqa: E402

pytestmark = pytest.mark.toolkit


def _write_png(path, h, w, value=80):
    img = np.full((h, w, 3), value, np.uint8)
    assert cv2.imwrite(str(path), img)


@pytest.fixture
def coco_dir(tmp_path):
    (tmp_path / "images").mkdir()
    for i, (h, w) in enumerate([(40, 60), (50, 50), (30, 80)]):
        _write_png(tmp_path / "images" / f"im{i}.png", h, w)
    ann = {"images": [{"id": 10 + i, "file_name": f"im{i}.png", "height": h, "width": w}
                      for i, (h, w) in enumerate([(40, 60), (50, 50), (30, 80)])],
           "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
           "annotations": [
               {"id": 1, "image_id": 10, "category_id": 7, "bbox": [5, 6, 20, 10], "iscrowd": 0, "area": 200},
               {"id": 2, "image_id": 10, "category_id": 3, "bbox": [30, 2, 10, 30], "iscrowd": 0, "area": 300},
               {"id": 3, "image_id": 11, "category_id": 3, "bbox": [0, 0, 25, 25], "iscrowd": 1, "area": 625}]}
    (tmp_path / "annotations.json").write_text(json.dumps(ann))
    return tmp_path


def test_coco_json_boxes_classes_and_crowd(coco_dir):
    pytest.importorskip("pycocotools")
    ds = load_detection_dataset("coco_detection", coco_dir, input_size=(20, 30))
    assert ds.info.task == "detection" and ds.info.labels == ["cat", "dog"]  # categories sorted by id: 3, 7
    assert len(ds) == 3
    np.testing.assert_allclose(ds.boxes[0], [[5, 6, 25, 16], [30, 2, 40, 32]])  # xywh -> xyxy
    assert ds.labels[0].tolist() == [1, 0]
    assert ds.crowd[1].tolist() == [True]
    x, t = ds[0]
    assert tuple(x.shape) == (3, 20, 30)
    # resized from 40x60 to 20x30: boxes halve; frame boxes stay in frame pixels
    np.testing.assert_allclose(t["boxes"].numpy(), [[2.5, 3, 12.5, 8], [15, 1, 20, 16]])
    np.testing.assert_allclose(t["frame_boxes"].numpy(), ds.boxes[0])
    # a crowd box is not learnt but stays in the frame ground truth
    _, t1 = ds[1]
    assert t1["boxes"].shape == (0, 4) and t1["crowd"].tolist() == [True]


def test_coco_json_missing_image_is_named(coco_dir):
    pytest.importorskip("pycocotools")
    (coco_dir / "images" / "im1.png").unlink()
    with pytest.raises(DatasetError, match="im1.png"):
        load_detection_dataset("coco_detection", coco_dir)


VOC_XML = """<annotation><filename>{name}.jpg</filename><size><width>64</width><height>48</height></size>
<object><name>car</name><difficult>0</difficult><bndbox><xmin>11</xmin><ymin>5</ymin><xmax>30</xmax><ymax>20</ymax>
</bndbox></object><object><name>person</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>1</ymin>
<xmax>10</xmax><ymax>40</ymax></bndbox></object></annotation>"""


def test_voc_xml_boxes_are_zero_based_and_difficult_is_crowd(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    for name in ("a", "b"):
        (tmp_path / "Annotations" / f"{name}.xml").write_text(VOC_XML.format(name=name))
        assert cv2.imwrite(str(tmp_path / "JPEGImages" / f"{name}.jpg"), np.zeros((48, 64, 3), np.uint8))
    ds = load_detection_dataset("voc_detection", tmp_path, input_size=(48, 64))
    assert ds.info.labels == ["car", "person"]
    np.testing.assert_allclose(ds.boxes[0], [[10, 4, 30, 20], [0, 0, 10, 40]])
    assert ds.labels[0].tolist() == [0, 1] and ds.crowd[0].tolist() == [False, True]
    _, t = ds[0]
    assert t["labels"].tolist() == [0]  # the difficult person is not a training target
    only_car = load_detection_dataset("voc_detection", tmp_path, labels=["car"])
    assert only_car.info.labels == ["car"] and only_car.labels[0].tolist() == [0]


def test_voc_xml_errors_name_the_problem():
    with pytest.raises(DatasetError, match="not valid XML"):
        parse_voc_xml("<annotation><object>", "x.xml")
    with pytest.raises(DatasetError, match="numeric"):
        parse_voc_xml("<annotation><object><name>a</name><bndbox><xmin>q</xmin></bndbox></object></annotation>")


def test_carve_every_is_by_image_and_disjoint():
    train, val = carve_every(120, 0.2)
    assert val == list(range(0, 120, 5)) and len(train) == 96 and not set(train) & set(val)
    with pytest.raises(DatasetError):
        carve_every(1, 0.5)


def test_synthetic_boxes_match_the_painted_rectangles():
    ds = load_detection_dataset("synthetic_det", None, input_size=(32, 32), n=4, num_classes=2, frame_size=(64, 64))
    frame = ds.frame(0)
    x1, y1, x2, y2 = (int(v) for v in ds.boxes[0][-1])  # the last one painted is fully visible
    patch = frame[y1:y2, x1:x2]
    assert (patch == patch[0, 0]).all() and patch[0, 0].max() > 100
    x, t = ds[0]
    np.testing.assert_allclose(t["boxes"].numpy(), ds.boxes[0] / 2)


def test_flip_and_scale_move_boxes_with_the_pixels():
    img = np.zeros((40, 80, 3), np.uint8)
    img[10:20, 5:25] = 255
    boxes = np.array([[5, 10, 25, 20]], np.float32)
    torch.manual_seed(0)
    for _ in range(8):
        out, b, keep = augment_detection(img, boxes, SegAugment(scale=(0.8, 1.3), flip=True), (40, 80))
        assert out.shape == (40, 80, 3)
        if keep.all():
            x1, y1, x2, y2 = b[0]
            inside = out[int(np.ceil(y1)) + 1:int(y2) - 1, int(np.ceil(x1)) + 1:int(x2) - 1]
            assert inside.size and inside.min() > 200  # the box still covers the white rectangle
            assert out.sum() <= 255 * 3 * ((x2 - x1 + 2) * (y2 - y1 + 2))  # and nothing white outside it


def test_collate_keeps_targets_per_image_and_moves_them():
    ds = load_detection_dataset("synthetic_det", None, input_size=(32, 32), n=3)
    images, targets = detection_collate([ds[0], ds[1], ds[2]])
    assert tuple(images.shape) == (3, 3, 32, 32) and isinstance(targets, Targets) and len(targets) == 3
    moved = targets.to("cpu")
    assert isinstance(moved, Targets) and torch.equal(moved[1]["boxes"], targets[1]["boxes"])


def test_recipe_splits_augment_only_training():
    spec = DataSpec(kind="synthetic_det", input_size=(32, 32), val_fraction=0.25, options={"n": 12},
                    augment={"scale": [0.5, 1.5]})
    train, val, info = load_detection_splits(spec)
    assert len(train) == 9 and len(val) == 3 and val.indices == [0, 4, 8]
    assert isinstance(train.dataset.augment, SegAugment) and val.dataset.augment is False
    with pytest.raises(DatasetError, match="val_split"):
        load_detection_splits(DataSpec(kind="synthetic_det", val_split="val"))


def test_pennfudan_zip_matches_the_shared_definition():
    from robot_compress import pennfudan as pf

    root = shared_path("data", "pennfudan-trainval.zip")
    ds = load_detection_dataset("pennfudan", root, input_size=(320, 320))
    assert len(ds) == 120 and ds.info.labels == ["person"]
    train, val = carve_every(len(ds), 0.2)
    assert [ds.names[i] + ".png" for i in val] == pf.split([n + ".png" for n in ds.names], "val")
    name, rgb, objects = next(pf.samples(root, "val", max_images=1))
    assert name.startswith(ds.names[0])
    np.testing.assert_allclose(ds.boxes[0], [o["box"] for o in objects])
    frame, target = ds.variant(raw_uint8=True)[0]
    assert frame.shape == rgb.shape and target["frame_size"] == rgb.shape[:2]
