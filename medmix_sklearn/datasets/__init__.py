"""Data sets: a controlled multimodal generator, phantom CT volumes, OpenI chest X-ray reports, MMIST-ccRCC."""

from ._mmist import load_mmist_ccrcc
from ._openi import OPENI_TARGETS, load_openi
from ._synthetic import make_multimodal_classification
from ._volumes import make_phantom_volume

__all__ = [
    "OPENI_TARGETS",
    "load_mmist_ccrcc",
    "load_openi",
    "make_multimodal_classification",
    "make_phantom_volume",
]
