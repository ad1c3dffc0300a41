"""Image conversion: every supported encoding, padded rows, and each bad-input case."""
import numpy as np
import pytest

from robot_compress.runtime.imaging import (
    ImageDecodeError,
    compressed_to_rgb,
    encode_compressed,
    raw_to_rgb,
    rgb_to_raw,
)

H, W = 5, 7


@pytest.fixture
def rgb():
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def _pack(pixels: np.ndarray, pad: int = 0) -> tuple[bytes, int]:
    """Lay out rows of `pixels` (H, W, C) with `pad` junk bytes after each row, as a camera driver may."""
    h, w, c = pixels.shape
    rows = pixels.reshape(h, w * c)
    junk = np.full((h, pad), 0xAB, np.uint8)
    return np.concatenate([rows, junk], axis=1).tobytes(), w * c + pad


@pytest.mark.parametrize("pad", [0, 3, 64])
@pytest.mark.parametrize(
    "encoding, channel_order",
    [("rgb8", [0, 1, 2]), ("bgr8", [2, 1, 0]), ("rgba8", [0, 1, 2, None]), ("bgra8", [2, 1, 0, None])],
)
def test_color_encodings_with_padding(rgb, encoding, channel_order, pad):
    planes = [rgb[:, :, i] if i is not None else np.full((H, W), 77, np.uint8) for i in channel_order]
    data, step = _pack(np.stack(planes, axis=2), pad)
    out = raw_to_rgb(encoding, H, W, step, False, data)
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("pad", [0, 5])
def test_mono8_replicates_channel(pad):
    gray = np.arange(H * W, dtype=np.uint8).reshape(H, W, 1)
    data, step = _pack(gray, pad)
    out = raw_to_rgb("mono8", H, W, step, False, data)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray[:, :, 0])


def test_big_endian_flag_does_not_change_8bit_layout(rgb):
    data, step = _pack(rgb)
    big = raw_to_rgb("rgb8", H, W, step, True, data)
    np.testing.assert_array_equal(big, raw_to_rgb("rgb8", H, W, step, False, data))


def test_encoding_is_case_insensitive(rgb):
    data, step = _pack(rgb)
    np.testing.assert_array_equal(raw_to_rgb("RGB8", H, W, step, False, data), rgb)


def test_round_trip_through_rgb_to_raw(rgb):
    for enc in ("rgb8", "bgr8", "rgba8", "bgra8"):
        data, step = rgb_to_raw(rgb, enc)
        np.testing.assert_array_equal(raw_to_rgb(enc, H, W, step, False, data), rgb)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(encoding="yuv422"), "unsupported image encoding 'yuv422'"),
        (dict(encoding="16UC1"), "unsupported image encoding"),
        (dict(data=b""), "empty"),
        (dict(data=b"\x00" * (W * 3 * H - 1)), "truncated"),
        (dict(data=b"\x00" * (W * 3 * H + 9)), "step*height"),
        (dict(step=W * 3 - 1), "step"),
        (dict(height=0), "empty size"),
    ],
)
def test_bad_raw_frames_name_the_problem(kwargs, message):
    args = dict(encoding="rgb8", height=H, width=W, step=W * 3, is_bigendian=False, data=b"\x00" * (W * 3 * H))
    args.update(kwargs)
    with pytest.raises(ImageDecodeError, match=message.replace("*", r"\*").replace("(", r"\(")):
        raw_to_rgb(**args)


def test_png_round_trip_is_lossless(rgb):
    data = encode_compressed(rgb, "png")
    np.testing.assert_array_equal(compressed_to_rgb("png", data), rgb)


def test_jpeg_decodes_close_to_source():
    smooth = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (48, 1, 3))
    out = compressed_to_rgb("rgb8; jpeg compressed bgr8", encode_compressed(smooth, "jpeg", quality=95))
    assert out.shape == smooth.shape
    assert np.abs(out.astype(int) - smooth.astype(int)).mean() < 3


@pytest.mark.parametrize(
    "fmt, data, message",
    [
        ("jpeg", b"", "empty"),
        ("jpeg", b"\xff\xd8\xff\xe0 definitely not a jpeg", "could not decode"),
        ("tiff", b"II*\x00", "unsupported compressed format"),
    ],
)
def test_bad_compressed_frames_name_the_problem(fmt, data, message):
    with pytest.raises(ImageDecodeError, match=message):
        compressed_to_rgb(fmt, data)


def test_truncated_jpeg_is_an_error(rgb):
    big = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode_compressed(big, "jpeg")
    with pytest.raises(ImageDecodeError):
        compressed_to_rgb("jpeg", data[: len(data) // 3])
