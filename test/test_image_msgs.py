"""sensor_msgs <-> RGB through ros/image_msgs.py (message fields, headers, padding, bad frames)."""
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from robot_compress.ros import image_msgs
from robot_compress.runtime.imaging import ImageDecodeError


@pytest.fixture
def rgb():
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)


def _header():
    h = Header(frame_id="cam_left")
    h.stamp.sec, h.stamp.nanosec = 12, 345
    return h


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_encodings_round_trip(rgb, encoding):
    msg = image_msgs.rgb_to_image(rgb, _header(), encoding)
    assert (msg.encoding, msg.height, msg.width) == (encoding, 5, 7)
    np.testing.assert_array_equal(image_msgs.msg_to_rgb(msg), rgb)


def test_bgr8_bytes_are_stored_blue_first(rgb):
    msg = image_msgs.rgb_to_image(rgb, encoding="bgr8")
    assert bytes(msg.data[:3]) == bytes(rgb[0, 0, ::-1])


def test_mono8_replicates_gray():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    msg = Image(height=3, width=4, encoding="mono8", step=4, data=gray.tobytes())
    out = image_msgs.image_to_rgb(msg)
    assert out.shape == (3, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_padded_step_is_honoured(rgb):
    step = 7 * 3 + 5
    padded = np.full((5, step), 99, np.uint8)
    padded[:, : 7 * 3] = rgb.reshape(5, -1)
    msg = Image(height=5, width=7, encoding="rgb8", step=step, data=padded.tobytes())
    np.testing.assert_array_equal(image_msgs.image_to_rgb(msg), rgb)


def test_truncated_frame_names_the_size_problem(rgb):
    msg = image_msgs.rgb_to_image(rgb)
    msg.data = bytes(msg.data)[:-10]
    with pytest.raises(ImageDecodeError, match="truncated"):
        image_msgs.msg_to_rgb(msg)


def test_unsupported_encoding_is_named(rgb):
    msg = image_msgs.rgb_to_image(rgb)
    msg.encoding = "yuv422"
    with pytest.raises(ImageDecodeError, match="yuv422"):
        image_msgs.msg_to_rgb(msg)


def test_mask_image_is_mono8_with_header_unchanged():
    mask = np.array([[0, 1, 2], [10, 3, 255]], np.uint8)
    header = _header()
    msg = image_msgs.mask_to_image(mask, header)
    assert (msg.encoding, msg.height, msg.width, msg.step) == ("mono8", 2, 3, 3)
    assert msg.header.frame_id == "cam_left" and (msg.header.stamp.sec, msg.header.stamp.nanosec) == (12, 345)
    np.testing.assert_array_equal(np.frombuffer(bytes(msg.data), np.uint8).reshape(2, 3), mask)


def test_mask_must_be_2d_uint8():
    with pytest.raises(ValueError, match="2-D uint8"):
        image_msgs.mask_to_image(np.zeros((2, 3), np.int32))


def test_png_compressed_round_trip_is_exact(rgb):
    msg = image_msgs.rgb_to_compressed(rgb, _header(), fmt="png")
    assert isinstance(msg, CompressedImage) and msg.format == "png" and msg.header.frame_id == "cam_left"
    np.testing.assert_array_equal(image_msgs.msg_to_rgb(msg), rgb)


def test_jpeg_compressed_decodes_close_to_source():
    smooth = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (48, 1, 3))
    out = image_msgs.msg_to_rgb(image_msgs.rgb_to_compressed(smooth, fmt="jpeg", quality=95))
    assert out.shape == smooth.shape
    assert np.abs(out.astype(int) - smooth).mean() < 3


def test_corrupt_jpeg_raises(rgb):
    msg = image_msgs.rgb_to_compressed(rgb, fmt="jpeg")
    msg.data = bytes(msg.data)[:20]
    with pytest.raises(ImageDecodeError, match="decode"):
        image_msgs.msg_to_rgb(msg)
