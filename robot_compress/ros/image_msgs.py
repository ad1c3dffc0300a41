"""sensor_msgs Image / CompressedImage <-> RGB arrays, through robot_compress.runtime.imaging.

Thin: this module only unpacks and packs message fields; all decoding rules (encodings, step padding,
size checks, JPEG/PNG) live in the runtime so they are tested without ROS.
"""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from robot_compress.runtime import imaging
from robot_compress.runtime.imaging import ImageDecodeError

__all__ = ["ImageDecodeError", "image_to_rgb", "compressed_to_rgb", "msg_to_rgb", "rgb_to_image", "mask_to_image",
           "rgb_to_compressed"]


def image_to_rgb(msg: Image) -> np.ndarray:
    return imaging.raw_to_rgb(msg.encoding, msg.height, msg.width, msg.step, bool(msg.is_bigendian), msg.data)


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    return imaging.compressed_to_rgb(msg.format, msg.data)


def msg_to_rgb(msg) -> np.ndarray:
    """Either message type -> (H, W, 3) uint8 RGB; raises ImageDecodeError naming the problem."""
    if isinstance(msg, CompressedImage):
        return compressed_to_rgb(msg)
    return image_to_rgb(msg)


def rgb_to_image(rgb: np.ndarray, header=None, encoding: str = "rgb8") -> Image:
    data, step = imaging.rgb_to_raw(rgb, encoding)
    msg = Image(height=int(rgb.shape[0]), width=int(rgb.shape[1]), encoding=encoding, is_bigendian=0, step=step)
    if header is not None:
        msg.header = header
    msg.data = data
    return msg


def mask_to_image(mask: np.ndarray, header=None) -> Image:
    """A uint8 class-id mask as a mono8 Image (pixel value = class id), carrying `header` unchanged."""
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"mask must be a 2-D uint8 array, got {mask.dtype} {mask.shape}")
    msg = Image(height=int(mask.shape[0]), width=int(mask.shape[1]), encoding="mono8", is_bigendian=0,
                step=int(mask.shape[1]))
    if header is not None:
        msg.header = header
    msg.data = np.ascontiguousarray(mask).tobytes()
    return msg


def rgb_to_compressed(rgb: np.ndarray, header=None, fmt: str = "jpeg", quality: int = 90) -> CompressedImage:
    msg = CompressedImage(format=fmt)
    if header is not None:
        msg.header = header
    msg.data = imaging.encode_compressed(rgb, fmt, quality)
    return msg
