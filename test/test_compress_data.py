"""Dataset readers (local paths only), synthetic sets and the deterministic split."""
import gzip
import pickle
import struct
import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from conftest import shared_path  # noqa: E402

from robot_compress.compress.data import CIFAR10_LABELS, DatasetError, load_dataset, split_train_val  # noqa: E402


def _jpeg(color, size=32):
    img = np.zeros((size, size, 3), np.uint8)
    img[:] = color[::-1]  # cv2 writes BGR
    return cv2.imencode(".jpg", img)[1].tobytes()


def _png(arr):
    return cv2.imencode(".png", arr)[1].tobytes()


@pytest.mark.parametrize("kind", ["synthetic_cls", "synthetic_seg"])
def test_synthetic_datasets_are_deterministic(kind):
    a, info = load_dataset(kind, None, n=6, seed=3)
    b, _ = load_dataset(kind, None, n=6, seed=3)
    c, _ = load_dataset(kind, None, n=6, seed=4)
    assert len(a) == 6
    for i in range(6):
        assert torch.equal(a[i][0], b[i][0])
    assert not torch.equal(a[0][0], c[0][0])
    x, y = a[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    if kind == "synthetic_seg":
        assert y.shape == (32, 32) and y.dtype == torch.long
        assert info.ignore_index == len(info.labels) and (y == info.ignore_index).any()
    else:
        assert isinstance(y, int) and 0 <= y < len(info.labels)


def test_raw_uint8_items_are_hwc_rgb():
    ds, info = load_dataset("synthetic_cls", None, n=4, raw_uint8=True, input_size=(24, 20))
    img, _ = ds[0]
    assert isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.shape == (24, 20, 3)
    norm, _ = load_dataset("synthetic_cls", None, n=4, input_size=(24, 20))
    expect = (img / 255.0 - np.array(info.mean)) / np.array(info.std)
    assert np.allclose(norm[0][0].numpy().transpose(1, 2, 0), expect, atol=1e-5)


def test_variant_shares_the_loaded_items_and_matches_a_fresh_load():
    ds, _ = load_dataset("synthetic_seg", None, n=4, seed=1)
    raw = ds.variant(raw_uint8=True)
    fresh, _ = load_dataset("synthetic_seg", None, n=4, seed=1, raw_uint8=True)
    assert raw.images is ds.images and raw.targets is ds.targets  # nothing read twice
    assert not ds.raw_uint8 and raw.raw_uint8 and not raw.augment
    for i in range(4):
        assert np.array_equal(raw[i][0], fresh[i][0]) and torch.equal(raw[i][1], fresh[i][1])
    assert ds.variant(augment=True).augment and not ds.augment


def test_split_is_deterministic_and_disjoint():
    ds, _ = load_dataset("synthetic_cls", None, n=50)
    tr, va = split_train_val(ds, 0.2, seed=7)
    tr2, va2 = split_train_val(ds, 0.2, seed=7)
    _, va3 = split_train_val(ds, 0.2, seed=8)
    assert len(va) == 10 and len(tr) == 40
    assert tr.indices == tr2.indices and va.indices == va2.indices
    assert not set(tr.indices) & set(va.indices)
    assert set(tr.indices) | set(va.indices) == set(range(50))
    assert va.indices != va3.indices
    with pytest.raises(ValueError):
        split_train_val(ds, 1.0, seed=0)


def test_cifar_zip_reader(tmp_path):
    path = tmp_path / "tiny.zip"
    colors = {"airplane": (255, 0, 0), "truck": (0, 0, 255), "cat": (0, 255, 0)}
    with zipfile.ZipFile(path, "w") as zf:
        for name, color in colors.items():
            for i in range(2):
                zf.writestr(f"train/{name}/{i:04d}.jpg", _jpeg(color))
    ds, info = load_dataset("cifar10", path)
    assert info.labels == list(sorted(colors))  # not all ten classes: folder names, sorted
    assert len(ds) == 6 and info.task == "classification"
    raw, _ = load_dataset("cifar10", path, raw_uint8=True)
    for i in range(6):
        img, y = raw[i]
        name = info.labels[y]
        assert np.abs(img.reshape(-1, 3).mean(0) - np.array(colors[name])).max() < 10
    assert info.fingerprint.startswith("sha256:")
    assert load_dataset("cifar10", path)[1].fingerprint == info.fingerprint
    with pytest.raises(DatasetError, match="split_train_val"):
        load_dataset("cifar10", path, train=False)


def test_cifar_full_class_set_keeps_canonical_order(tmp_path):
    root = tmp_path / "tree"
    for name in CIFAR10_LABELS:
        (root / name).mkdir(parents=True)
        (root / name / "a.jpg").write_bytes(_jpeg((10, 10, 10)))
    ds, info = load_dataset("cifar10", root)
    assert info.labels == CIFAR10_LABELS and len(ds) == 10
    assert [ds[i][1] for i in range(10)] == list(range(10))


def test_cifar_python_batches(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(root / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 255, (3, 3072), dtype=np.uint8), "labels": [1, 2, 3]}, f)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR10_LABELS}, f)
    train, info = load_dataset("cifar10", tmp_path, augment=True)
    test, _ = load_dataset("cifar10", tmp_path, train=False)
    assert len(train) == 15 and len(test) == 3 and info.labels == CIFAR10_LABELS
    assert train[0][0].shape == (3, 32, 32) and test[2][1] == 3


def test_fashion_mnist_idx(tmp_path):
    imgs = np.arange(2 * 28 * 28, dtype=np.uint32).reshape(2, 28, 28) % 256
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">HBBIII", 0, 8, 3, 2, 28, 28) + imgs.astype(np.uint8).tobytes())
    with open(tmp_path / "train-labels-idx1-ubyte", "wb") as f:
        f.write(struct.pack(">HBBI", 0, 8, 1, 2) + bytes([4, 9]))
    ds, info = load_dataset("fashion_mnist", tmp_path, raw_uint8=True)
    img, y = ds[1]
    assert img.shape == (32, 32, 3) and y == 9 and len(info.labels) == 10
    assert np.array_equal(img[2:30, 2:30, 0], imgs[1].astype(np.uint8)) and img[0, 0, 0] == 0
    with pytest.raises(DatasetError, match="t10k-images"):
        load_dataset("fashion_mnist", tmp_path, train=False)


def _camvid_tree(root, split="train", n=2):
    (root / split).mkdir(parents=True)
    (root / (split + "annot")).mkdir()
    for i in range(n):
        label = np.full((12, 16), 3, np.uint8)
        label[:, :4] = 11  # void
        label[0, 0] = 200  # unexpected value: treated as void too
        img = np.zeros((12, 16, 3), np.uint8)
        img[..., 1] = 10 * i
        (root / split / f"f{i}.png").write_bytes(_png(img))
        (root / (split + "annot") / f"f{i}.png").write_bytes(_png(label))


def test_camvid_dir_and_void(tmp_path):
    _camvid_tree(tmp_path / "CamVid")
    ds, info = load_dataset("camvid", tmp_path, input_size=(6, 8))
    assert len(ds) == 2 and info.ignore_index == 11 and len(info.labels) == 11
    x, y = ds[1]
    assert x.shape == (3, 6, 8) and y.shape == (6, 8) and y.dtype == torch.long
    assert set(y.unique().tolist()) == {3, 11}
    assert (y[:, :2] == 11).all() and (y[:, 2:] == 3).all()  # nearest resize keeps hard edges
    with pytest.raises(DatasetError, match="val"):
        load_dataset("camvid", tmp_path, train=False)


def test_camvid_zip(tmp_path):
    _camvid_tree(tmp_path / "src" / "CamVid", "val", n=3)
    path = tmp_path / "cv.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for p in sorted((tmp_path / "src").rglob("*.png")):
            zf.write(p, p.relative_to(tmp_path / "src").as_posix())
    ds, info = load_dataset("camvid", path, train=False, input_size=(12, 16))
    assert len(ds) == 3
    assert int((ds[0][1] == 11).sum()) == 12 * 4


def test_missing_path_and_empty_dataset(tmp_path):
    with pytest.raises(DatasetError, match="nope"):
        load_dataset("cifar10", tmp_path / "nope")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(DatasetError, match="empty"):
        load_dataset("cifar10", tmp_path / "empty")
    empty_zip = tmp_path / "e.zip"
    zipfile.ZipFile(empty_zip, "w").close()
    with pytest.raises(DatasetError, match="empty"):
        load_dataset("cifar10", empty_zip)
    with pytest.raises(DatasetError, match="unknown dataset kind"):
        load_dataset("imagenet", tmp_path)
    with pytest.raises(DatasetError, match="pycocotools|annotations"):
        load_dataset("coco", tmp_path)


def test_augment_keeps_shapes_and_labels():
    ds, _ = load_dataset("synthetic_seg", None, n=4, augment=True, seed=1)
    plain, _ = load_dataset("synthetic_seg", None, n=4, seed=1)
    torch.manual_seed(0)
    for i in range(4):
        (x, y), (_, y0) = ds[i], plain[i]
        assert x.shape == (3, 32, 32)
        assert torch.equal(y, y0) or torch.equal(y, y0.flip(-1))


def test_shared_cifar_zip():
    path = shared_path("data", "cifar10-jpeg-train.zip")
    ds, info = load_dataset("cifar10", path)
    assert len(ds) == 50000 and info.labels == CIFAR10_LABELS
    assert ds[0][1] == 0 and ds[49999][1] == 9 and ds[0][0].shape == (3, 32, 32)


def test_shared_camvid_zip():
    path = shared_path("data", "camvid-trainval.zip")
    train, info = load_dataset("camvid", path, input_size=(90, 120))
    val, _ = load_dataset("camvid", path, train=False, input_size=(90, 120))
    assert (len(train), len(val)) == (367, 101)
    y = train[0][1]
    assert y.shape == (90, 120) and int(y.max()) <= 11


def test_voc_palette_labels_are_class_indices(tmp_path):
    from PIL import Image

    base = tmp_path / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True)
    (base / "ImageSets/Segmentation/train.txt").write_text("a\n")
    (base / "JPEGImages/a.jpg").write_bytes(_jpeg((90, 90, 90), size=8))
    label = np.zeros((8, 8), np.uint8)
    label[:, 4:] = 15  # person
    label[0, :] = 255  # void border
    img = Image.fromarray(label, mode="P")
    img.putpalette([v for i in range(256) for v in (i * 7 % 256, i * 3 % 256, i)])
    img.save(base / "SegmentationClass/a.png")
    ds, info = load_dataset("voc", tmp_path, input_size=(8, 8))
    y = ds[0][1]
    assert info.ignore_index == 255 and len(info.labels) == 21
    assert int(y[1, 5]) == 15 and int(y[1, 0]) == 0 and (y[0] == 255).all()
