"""Splitters, scorers and searches that know about missing modalities."""

from ._scoring import PatternScorer, make_pattern_scorers, missingness_report
from ._search import SearchPipeline, create_study, default_search_space
from ._split import (
    MissingnessStratifiedGroupKFold,
    MissingnessStratifiedKFold,
    availability_patterns,
    pattern_labels,
)

__all__ = [
    "MissingnessStratifiedGroupKFold",
    "MissingnessStratifiedKFold",
    "PatternScorer",
    "SearchPipeline",
    "availability_patterns",
    "create_study",
    "default_search_space",
    "make_pattern_scorers",
    "missingness_report",
    "pattern_labels",
]
