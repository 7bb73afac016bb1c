"""medmix_sklearn: multimodal clinical prediction with missing modalities.

Foundation-model experts embed each modality (:class:`ImageExpert`,
:class:`TextExpert`); :class:`MultimodalExpertEmbedder` turns a clinical
DataFrame into a block-structured embedding matrix with NaN blocks for absent
modalities; :class:`MedMIXClassifier` fuses experts and modalities with learned,
per-sample weights.
"""

__version__ = "0.1.0"
