"""Fusion of experts and modalities: :class:`MedMIXClassifier`.

The network and losses (``_network``, ``_losses``) are pure torch; the private
skorch net (``_net``) runs training; ``_classifier`` is the scikit-learn face.
"""

from ._classifier import MedMIXClassifier

__all__ = ["MedMIXClassifier"]
