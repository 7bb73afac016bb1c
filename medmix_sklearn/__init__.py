"""medmix_sklearn: multimodal clinical prediction with missing modalities.

Foundation-model experts embed each modality (:class:`ImageExpert`,
:class:`TextExpert`, :class:`HFImageExpert`, the CLIP towers, and
:class:`VolumeExpert` for CT and MRI); :class:`MultimodalExpertEmbedder` turns a
clinical DataFrame into a block-structured embedding matrix with NaN blocks for
absent modalities; :class:`MedMIXClassifier` fuses experts and modalities with
learned, per-sample weights.

``import medmix_sklearn`` is light: the public names below are imported from
their subpackage on first use (module-level ``__getattr__``), so torch, skorch
and optuna load only when a name that needs them is used.
"""

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public name -> the module that defines it, imported on first access.
_LAZY = {
    "CLIPImageExpert": ".experts",
    "CLIPTextExpert": ".experts",
    "EmbeddingCache": ".embedding",
    "HFImageExpert": ".experts",
    "ImageExpert": ".experts",
    "MedMIXClassifier": ".fusion",
    "MultimodalExpertEmbedder": ".embedding",
    "TextExpert": ".experts",
    "VolumeExpert": ".experts",
    "describe_model": "._provenance",
    "list_presets": ".experts",
    "load_model": "._provenance",
    "save_model": "._provenance",
    "write_report": ".report",
}

__all__ = [
    "CLIPImageExpert",
    "CLIPTextExpert",
    "EmbeddingCache",
    "HFImageExpert",
    "ImageExpert",
    "MedMIXClassifier",
    "MultimodalExpertEmbedder",
    "TextExpert",
    "VolumeExpert",
    "__version__",
    "describe_model",
    "list_presets",
    "load_model",
    "save_model",
    "write_report",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from ._provenance import describe_model, load_model, save_model
    from .embedding import EmbeddingCache, MultimodalExpertEmbedder
    from .experts import (
        CLIPImageExpert,
        CLIPTextExpert,
        HFImageExpert,
        ImageExpert,
        TextExpert,
        VolumeExpert,
        list_presets,
    )
    from .fusion import MedMIXClassifier
    from .report import write_report


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
