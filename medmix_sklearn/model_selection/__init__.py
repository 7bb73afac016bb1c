"""Splitters, scorers and searches that know about missing modalities."""

from .._missing import (
    availability_patterns,
    blank_modalities,
    modality_columns,
    pattern_labels,
    subset_score,
)
from ._evaluation import default_baselines, evaluate_methods
from ._robustness import (
    ModalityAmputer,
    ece_scorer,
    expected_calibration_error,
    plot_robustness_curves,
    robustness_curve,
)
from ._scoring import PatternScorer, make_pattern_scorers, missingness_dependence, missingness_report
from ._search import SearchPipeline, create_study, default_search_space
from ._split import MissingnessStratifiedGroupKFold, MissingnessStratifiedKFold

__all__ = [
    "ModalityAmputer",
    "ece_scorer",
    "expected_calibration_error",
    "plot_robustness_curves",
    "robustness_curve",
    "MissingnessStratifiedGroupKFold",
    "MissingnessStratifiedKFold",
    "PatternScorer",
    "SearchPipeline",
    "availability_patterns",
    "blank_modalities",
    "create_study",
    "default_baselines",
    "default_search_space",
    "evaluate_methods",
    "make_pattern_scorers",
    "missingness_dependence",
    "missingness_report",
    "modality_columns",
    "pattern_labels",
    "subset_score",
]
