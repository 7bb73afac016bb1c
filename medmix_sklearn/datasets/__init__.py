"""Data sets: a controlled multimodal generator and the OpenI chest X-ray reports."""

from ._openi import OPENI_TARGETS, load_openi
from ._synthetic import make_multimodal_classification

__all__ = ["OPENI_TARGETS", "load_openi", "make_multimodal_classification"]
