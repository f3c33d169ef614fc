"""What an image costs in a prompt, the way OpenAI documents it for each model. No I/O.

Two methods exist. Tile models scale the image to fit 2048x2048, then its shortest side
down to 768, and charge a base plus a price per 512-pixel tile. Patch models count 32-pixel
patches (at most 1536, scaling the image down to fit), times a per-model multiplier.
`detail: low` is the base alone (tile models) or is not offered; chatms asks for `auto` and
counts the `high` cost, so the budget never undercounts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from chatms.domain.budget import model_family

# Longest prefix wins ("gpt-4o-mini-2024-07-18" is a gpt-4o-mini).
TILE_COSTS: dict[str, tuple[int, int]] = {  # (base, per tile)
    "gpt-4-turbo": (85, 170),
    "gpt-4o": (85, 170),
    "gpt-4o-mini": (2833, 5667),
    "gpt-4.1": (85, 170),
    "gpt-4.5": (85, 170),
    "o1": (75, 150),
    "o3": (75, 150),
}
PATCH_MULTIPLIERS: dict[str, float] = {
    "gpt-4.1-mini": 1.62,
    "gpt-4.1-nano": 2.46,
    "o4-mini": 1.72,
}
DEFAULT_VISION_MODELS: tuple[str, ...] = (
    *TILE_COSTS, *PATCH_MULTIPLIERS,
)
MAX_PATCHES = 1536
PATCH = 32


def accepts_images(model: str, vision_models: tuple[str, ...]) -> bool:
    """Whether `model` (or its dated snapshot) is one of the configured vision models."""
    return model_family(model, vision_models) is not None


def _tiles(width: int, height: int) -> int:
    scale = min(1.0, 2048 / max(width, height))
    w, h = width * scale, height * scale
    scale = min(1.0, 768 / min(w, h))
    w, h = w * scale, h * scale
    return math.ceil(w / 512) * math.ceil(h / 512)


def _patches(width: int, height: int) -> int:
    if math.ceil(width / PATCH) * math.ceil(height / PATCH) > MAX_PATCHES:
        r = math.sqrt(PATCH * PATCH * MAX_PATCHES / (width * height))
        r *= min(math.floor(width * r / PATCH) / (width * r / PATCH),
                 math.floor(height * r / PATCH) / (height * r / PATCH))
        width, height = max(1, math.floor(width * r)), max(1, math.floor(height * r))
    return min(MAX_PATCHES, math.ceil(width / PATCH) * math.ceil(height / PATCH))


@dataclass(frozen=True, slots=True)
class ImageSize:
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError("an image has a positive width and height")


def image_tokens(model: str, size: ImageSize) -> int:
    """Prompt tokens of one image of `size` for `model` (unknown models: gpt-4o's rates)."""
    patch_family = model_family(model, tuple(PATCH_MULTIPLIERS))
    tile_family = model_family(model, tuple(TILE_COSTS))
    if patch_family is not None and (
        tile_family is None or len(patch_family) > len(tile_family)
    ):
        return math.ceil(_patches(size.width, size.height) * PATCH_MULTIPLIERS[patch_family])
    base, per_tile = TILE_COSTS[tile_family or "gpt-4o"]
    return base + per_tile * _tiles(size.width, size.height)
