"""Image sizes read from headers only, and OpenAI's documented image token costs."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from chatms.adapters.images import image_size
from chatms.domain.errors import MediaUnavailable
from chatms.domain.vision import (
    DEFAULT_VISION_MODELS,
    ImageSize,
    accepts_images,
    image_tokens,
)


def encoded(fmt: str, width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize(("fmt", "ctype"), [("JPEG", "image/jpeg"), ("PNG", "image/png"),
                                           ("WEBP", "image/webp")])
def test_sizes_of_supported_formats(fmt: str, ctype: str) -> None:
    assert image_size(encoded(fmt, 640, 480), ctype) == ImageSize(640, 480)


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_a_small_file_claiming_a_huge_size_is_refused_without_decoding() -> None:
    with pytest.raises(MediaUnavailable):
        image_size(_png_claiming(100_000, 100_000), "image/png")


def test_garbage_and_mislabelled_images_are_refused() -> None:
    with pytest.raises(MediaUnavailable):
        image_size(b"\xff\xd8 not really a jpeg", "image/jpeg")
    with pytest.raises(MediaUnavailable):
        image_size(encoded("PNG", 10, 10), "image/jpeg")  # only the declared format is tried
    with pytest.raises(MediaUnavailable):
        image_size(encoded("PNG", 10, 10), "image/gif")


def test_tile_costs_match_openai_examples() -> None:
    assert image_tokens("gpt-4o", ImageSize(1024, 1024)) == 765
    assert image_tokens("gpt-4o-2024-08-06", ImageSize(2048, 4096)) == 1105
    assert image_tokens("gpt-4o", ImageSize(100, 100)) == 85 + 170
    assert image_tokens("gpt-4o-mini", ImageSize(1024, 1024)) == 2833 + 5667 * 4


def test_patch_costs_match_openai_examples() -> None:
    assert image_tokens("gpt-4.1-mini", ImageSize(1024, 1024)) == 1659  # 1024 patches x 1.62
    assert image_tokens("gpt-4.1-mini", ImageSize(1800, 2400)) == 2353  # 1452 patches x 1.62
    assert image_tokens("gpt-4.1-nano", ImageSize(8000, 8000)) == 3742  # scaled to 39x39 patches


def test_vision_models_match_dated_snapshots_only_by_family() -> None:
    assert accepts_images("gpt-4o-mini-2024-07-18", DEFAULT_VISION_MODELS)
    assert not accepts_images("gpt-3.5-turbo", DEFAULT_VISION_MODELS)
    assert not accepts_images("gpt-4o-minix", ("gpt-4o-mini",))
