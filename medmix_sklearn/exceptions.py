"""Warnings and errors raised by medmix_sklearn.

Library errors subclass the matching built-in so that callers can catch them
generically (``except ValueError``); warnings have their own classes so that
users can filter them (``warnings.filterwarnings("ignore", category=...)``).
"""

__all__ = [
    "ExpertNotFoundError",
    "ItemReadError",
    "ItemReadWarning",
    "MissingExtraError",
    "MissingModalityWarning",
    "ExpertFingerprintWarning",
    "DeviceFallbackWarning",
    "LayoutWarning",
    "UnsafeModelFileWarning",
    "NumericCoercionWarning",
    "CalibrationWarning",
]


class ExpertNotFoundError(ValueError):
    """An expert name matches no preset, timm model, or Hugging Face model."""


class MissingExtraError(ImportError):
    """An optional dependency is needed; the message names the extra to install."""


class ItemReadError(ValueError):
    """One input item (an image file, an array, a text) could not be read."""


class ItemReadWarning(UserWarning):
    """An unreadable item was turned into a NaN block (``on_error="warn"``)."""


class MissingModalityWarning(UserWarning):
    """A modality is absent for every row, or for more rows than expected."""


class ExpertFingerprintWarning(UserWarning):
    """An expert's weights differ from those a saved model was trained with."""


class DeviceFallbackWarning(UserWarning):
    """A fitted object's device is not available here; it runs on the CPU instead."""


class LayoutWarning(UserWarning):
    """The block layout could not be read from the input; it was lost on the way."""


class UnsafeModelFileWarning(UserWarning):
    """A model file in a format that runs code when loaded (pickle) is being loaded."""


class NumericCoercionWarning(UserWarning):
    """Cells of a numeric column that are not numbers were turned into NaN (on request)."""


class CalibrationWarning(UserWarning):
    """A classifier's fitted temperatures (``MedMIXClassifier(calibration=...)``) were dropped."""
