"""Image dimensions through Pillow, from the file's header only (nothing is decoded)."""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from chatms.domain.errors import MediaUnavailable
from chatms.domain.vision import ImageSize

FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}


def image_size(data: bytes, content_type: str) -> ImageSize:
    """Width and height of a JPEG, PNG or WebP; MediaUnavailable when it is none of them.

    `Image.open` reads the header and stops: the pixels are never decoded, so a small file
    that claims a huge size costs nothing (Pillow refuses absurd sizes outright).
    """
    fmt = FORMATS.get(content_type.split(";", 1)[0].strip().lower())
    if fmt is None:
        raise MediaUnavailable(f"{content_type} is not a supported image type")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[fmt]) as image:
                width, height = image.size
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning,
            OSError, ValueError, SyntaxError):
        raise MediaUnavailable("the image could not be read") from None
    return ImageSize(width, height)
