"""Data sets: a controlled multimodal generator, OpenI chest X-ray reports, MMIST-ccRCC."""

from ._mmist import load_mmist_ccrcc
from ._openi import OPENI_TARGETS, load_openi
from ._synthetic import make_multimodal_classification

__all__ = ["OPENI_TARGETS", "load_mmist_ccrcc", "load_openi", "make_multimodal_classification"]
