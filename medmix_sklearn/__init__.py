"""medmix_sklearn: multimodal clinical prediction with missing modalities.

Foundation-model experts embed each modality (:class:`ImageExpert`,
:class:`TextExpert`); :class:`MultimodalExpertEmbedder` turns a clinical
DataFrame into a block-structured embedding matrix with NaN blocks for absent
modalities; :class:`MedMIXClassifier` fuses experts and modalities with learned,
per-sample weights.
"""

from ._provenance import describe_model, load_model, save_model
from .embedding import EmbeddingCache, MultimodalExpertEmbedder
from .experts import ImageExpert, TextExpert, list_presets
from .fusion import MedMIXClassifier
from .report import write_report

__version__ = "0.1.0"

__all__ = [
    "EmbeddingCache",
    "ImageExpert",
    "MedMIXClassifier",
    "MultimodalExpertEmbedder",
    "TextExpert",
    "__version__",
    "describe_model",
    "list_presets",
    "load_model",
    "save_model",
    "write_report",
]
