"""Frozen pretrained experts that embed images and texts."""

from ._base import CACHE_FORMAT_VERSION, BaseExpert
from ._image import ImageExpert
from ._registry import find_preset, get_preset, list_presets
from ._text import TextExpert

__all__ = [
    "BaseExpert",
    "CACHE_FORMAT_VERSION",
    "ImageExpert",
    "TextExpert",
    "find_preset",
    "get_preset",
    "list_presets",
]
