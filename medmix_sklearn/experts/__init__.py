"""Frozen pretrained experts that embed images, texts and volumes."""

from ._base import CACHE_FORMAT_VERSION, PRECISIONS, BaseExpert
from ._clip import CLIPImageExpert, CLIPTextExpert
from ._hf_image import HFImageExpert
from ._image import ImageExpert
from ._registry import find_preset, get_preset, list_presets
from ._text import TextExpert
from ._volume import CT_WINDOWS, VolumeExpert, list_volume_architectures
from ._volume_io import Volume, read_volume

__all__ = [
    "BaseExpert",
    "CACHE_FORMAT_VERSION",
    "CLIPImageExpert",
    "CLIPTextExpert",
    "CT_WINDOWS",
    "HFImageExpert",
    "PRECISIONS",
    "ImageExpert",
    "TextExpert",
    "Volume",
    "VolumeExpert",
    "find_preset",
    "get_preset",
    "list_presets",
    "list_volume_architectures",
    "read_volume",
]
