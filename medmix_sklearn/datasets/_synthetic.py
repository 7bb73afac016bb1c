"""A controlled multimodal generator: radiograph-like images, report-like text, labs."""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

__all__ = ["make_multimodal_classification"]

MODALITIES = ("image", "text", "labs")
LAB_COLUMNS = ("wbc", "crp", "heart_rate", "temperature", "spo2")
_DEFAULT_SIGNAL = {"image": 0.7, "text": 0.7, "labs": 0.6}
# Logit shift of the per-class missing probability under missingness="label":
# +_LABEL_MISSING_SHIFT for class 0 down to -_LABEL_MISSING_SHIFT for the last
# (sickest) class.
_LABEL_MISSING_SHIFT = 1.0


@validate_params(
    {
        "n_samples": [Interval(numbers.Integral, 1, None, closed="left")],
        "image_dir": [str, os.PathLike, None],
        "n_classes": [Interval(numbers.Integral, 2, None, closed="left")],
        "image_size": [Interval(numbers.Integral, 32, 1024, closed="both")],
        # Floats or {modality: float}; the dict values are checked inside.
        "missing_rate": [numbers.Real, Mapping],
        "missingness": [StrOptions({"random", "label"})],
        "modality_signal": [numbers.Real, Mapping, None],
        "reliability_spread": [Interval(numbers.Real, 0, 1, closed="left")],
        "cell_missing_rate": [Interval(numbers.Real, 0, 1, closed="left")],
        "return_latent": ["boolean"],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_multimodal_classification(
    n_samples=500,
    *,
    image_dir=None,
    n_classes=2,
    image_size=64,
    missing_rate=0.2,
    missingness="random",
    modality_signal=None,
    reliability_spread=0.6,
    cell_missing_rate=0.1,
    return_latent=False,
    random_state=None,
):
    """Generate a multimodal clinical classification problem with missing modalities.

    Each row is a patient with up to three modalities: a grayscale radiograph-like
    PNG (``image_path``), a report-like free text (``report``) and lab values.
    Each modality shows one latent factor, and the label depends on all three, so
    the modalities are complementary rather than redundant. The reliability of the
    image and the text varies from row to row (pixel noise, vague and hedged
    wording), and whole modalities go missing at random or depending on the label.

    Parameters
    ----------
    n_samples : int, default=500
        Number of rows. At least ``2 * n_classes``.

    image_dir : str or path-like, default=None
        Folder the PNG files are written to (created if needed; files are named
        ``sample_00000.png``, ... and overwrite files of the same name). With
        ``None`` no file is written and the ``image_path`` column is left out:
        the data set has the text and lab modalities only, while the image factor
        ``z_image`` still drives the label, unobserved.

    n_classes : int, default=2
        Number of classes, at least 2. Classes are balanced; a higher class index
        means a sicker patient (this is what ``missingness="label"`` uses).

    image_size : int, default=64
        Side of the square images in pixels, between 32 and 1024.

    missing_rate : float or dict, default=0.2
        Probability that a modality is absent for a row, in ``[0, 1)``. A dict maps
        modality names (``"image"``, ``"text"``, ``"labs"``) to rates; modalities it
        does not name are never missing. Modalities go missing independently of
        each other (given the label), so a row can lose all of them; age and sex
        are always present.

    missingness : {"random", "label"}, default="random"
        ``"random"``: every row has the same missing probability. ``"label"``:
        sicker patients get more examinations; the missing probability of a
        modality is ``sigmoid(b + s_c)`` with ``s_c`` going linearly from +1 for
        class 0 to -1 for the last class, and ``b`` set so that the average over
        the rows equals ``missing_rate``.

    modality_signal : float or dict, default=None
        Class separation of each modality's latent factor (see Notes), >= 0. A
        dict maps modality names to values, the others keeping their default;
        ``None`` means ``{"image": 0.7, "text": 0.7, "labs": 0.6}``. Zero makes a
        modality pure noise.

    reliability_spread : float, default=0.6
        Per-row reliability ``r`` of the image and the text is drawn uniformly from
        ``[1 - reliability_spread, 1]``, in ``[0, 1)``. Low reliability means more
        pixel noise, and a vaguer, more hedged report with more irrelevant
        sentences; in both cases the observed evidence carries less of the latent
        factor. Zero makes every row fully reliable.

    cell_missing_rate : float, default=0.1
        Probability that a single lab cell is NaN in a row whose labs are present,
        in ``[0, 1)``.

    return_latent : bool, default=False
        Also return the latent factors (see Returns).

    random_state : int, RandomState instance or None, default=None
        Seed. With a fixed int the frames, the texts and the image bytes are the
        same on every call.

    Returns
    -------
    X : pandas.DataFrame of shape (n_samples, n_columns)
        Columns, in order: ``image_path`` (absolute path of the PNG, ``None``
        where the image is missing; only when ``image_dir`` is given),
        ``report`` (str, ``None`` where missing), ``age`` (float, years), ``sex``
        (categorical, ``"F"``/``"M"``), and the labs ``wbc`` (10^9/L), ``crp``
        (mg/L), ``heart_rate`` (/min), ``temperature`` (degrees C) and ``spo2``
        (%), all NaN where the lab modality is missing and single cells NaN at
        ``cell_missing_rate``. Age and sex are always present.

    y : pandas.Series of shape (n_samples,)
        Integer class labels ``0 .. n_classes - 1``, named ``"target"``.

    latent : pandas.DataFrame of shape (n_samples, 8)
        Only when ``return_latent=True``. Columns ``z_image``, ``z_text``,
        ``z_labs`` (the latent factors), ``reliability_image``,
        ``reliability_text`` (the per-row reliability ``r``), and
        ``present_image``, ``present_text``, ``present_labs`` (bool; whether the
        modality is in ``X``; ``present_image`` is computed even when
        ``image_dir`` is None).

    Notes
    -----
    The label is drawn first (balanced, shuffled). Given class ``c``, the latent
    factor of modality ``m`` is ``z_m = -a_m cos(2 pi c / K + phi_m) + N(0, 1)``,
    independently across modalities, with ``a_m = modality_signal[m]``,
    ``K = n_classes`` and ``phi_m = 0`` for binary problems, ``0, pi/3, 2 pi/3``
    for image, text and labs otherwise. For a binary problem the class means are
    therefore ``-a_m`` and ``+a_m`` and a perfect reader of ``z_m`` alone reaches
    an AUROC of ``Phi(a_m sqrt(2))``; combining the modalities adds their
    evidence. With three or more classes each modality confuses a different pair
    of classes, so only their combination separates all classes.

    What each modality shows:

    - image: the observed factor ``u = r z_image + sqrt(1 - r^2) e``
      (``e ~ N(0, 1)``) sets the size and density of an opacity in one lung field
      and the frequency and contrast of an interstitial texture; body shape,
      position, brightness, rib phase and the lesion's location are nuisance.
      Pixel noise has standard deviation ``0.02 + 0.22 (1 - r)``.
    - text: the observed factor ``r z_text + sqrt(1 - r^2) e`` decides which
      findings are asserted or negated ("no evidence of ...") and how severe they
      are; with probability about ``1 - r`` a statement is hedged ("possible",
      "cannot exclude"), and low reliability adds irrelevant sentences.
    - labs: ``wbc``, ``crp``, ``heart_rate``, ``temperature`` rise and ``spo2``
      falls with ``z_labs``, each with its own measurement noise.
    - age (always present) rises slightly with the class: its mean goes from 55
      years for class 0 to 61 for the last class (standard deviation 15); sex
      carries no signal.

    Examples
    --------
    >>> from medmix_sklearn.datasets import make_multimodal_classification
    >>> X, y = make_multimodal_classification(n_samples=20, random_state=0)
    >>> list(X.columns)
    ['report', 'age', 'sex', 'wbc', 'crp', 'heart_rate', 'temperature', 'spo2']
    >>> y.value_counts().tolist()
    [10, 10]
    """
    if n_samples < 2 * n_classes:
        raise ValueError(
            f"n_samples must be at least 2 * n_classes = {2 * n_classes} so that "
            f"every class has two rows. Got n_samples={n_samples!r} instead."
        )
    rates = _check_per_modality(
        "missing_rate", missing_rate, default=0.0, low=0.0, high=1.0, closed_high=False
    )
    signal = _check_per_modality(
        "modality_signal",
        _DEFAULT_SIGNAL if modality_signal is None else modality_signal,
        default=_DEFAULT_SIGNAL,
        low=0.0,
        high=None,
    )
    n_samples, n_classes, image_size = int(n_samples), int(n_classes), int(image_size)
    reliability_spread, cell_missing_rate = float(reliability_spread), float(cell_missing_rate)
    if image_dir is not None:
        image_dir = os.path.abspath(os.fspath(image_dir))

    seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
    streams = np.random.SeedSequence(seed).spawn(6)
    rng_latent, rng_missing, rng_image, rng_text, rng_labs, rng_demo = (
        np.random.default_rng(s) for s in streams
    )

    y = rng_latent.permutation(np.arange(n_samples) % n_classes)
    theta = 2.0 * np.pi * y / n_classes
    z = {}
    for k, m in enumerate(MODALITIES):
        phase = 0.0 if n_classes == 2 else k * np.pi / 3.0
        z[m] = -signal[m] * np.cos(theta + phase) + rng_latent.standard_normal(n_samples)
    reliability = {
        m: rng_latent.uniform(1.0 - reliability_spread, 1.0, n_samples)
        for m in ("image", "text")
    }
    observed = {
        m: reliability[m] * z[m]
        + np.sqrt(1.0 - reliability[m] ** 2) * rng_latent.standard_normal(n_samples)
        for m in ("image", "text")
    }

    present = _draw_presence(y, n_classes, rates, missingness, rng=rng_missing)

    columns: dict[str, object] = {}
    if image_dir is not None:
        os.makedirs(image_dir, exist_ok=True)
        paths = np.full(n_samples, None, dtype=object)
        renderer = _RadiographRenderer(image_size)
        for i in np.flatnonzero(present["image"]):
            pixels = renderer.render(observed["image"][i], reliability["image"][i], rng_image)
            path = os.path.join(image_dir, f"sample_{i:05d}.png")
            _write_png(pixels, path)
            paths[i] = path
        columns["image_path"] = pd.Series(paths, dtype=object)

    reports = np.full(n_samples, None, dtype=object)
    for i in np.flatnonzero(present["text"]):
        reports[i] = _write_report(observed["text"][i], reliability["text"][i], rng_text)
    columns["report"] = pd.Series(reports, dtype=object)

    severity = y / (n_classes - 1)
    age = np.clip(np.round(rng_demo.normal(55.0 + 6.0 * severity, 15.0)), 18, 95)
    columns["age"] = age.astype(float)
    columns["sex"] = pd.Categorical.from_codes(
        rng_demo.integers(0, 2, n_samples), categories=["F", "M"]
    )
    labs = _draw_labs(z["labs"], rng_labs)
    cell_nan = rng_labs.random((n_samples, len(LAB_COLUMNS))) < cell_missing_rate
    for j, name in enumerate(LAB_COLUMNS):
        values = labs[name]
        values[cell_nan[:, j] | ~present["labs"]] = np.nan
        columns[name] = values

    X = pd.DataFrame(columns)
    y = pd.Series(y, name="target")
    if not return_latent:
        return X, y
    latent = pd.DataFrame(
        {
            "z_image": z["image"],
            "z_text": z["text"],
            "z_labs": z["labs"],
            "reliability_image": reliability["image"],
            "reliability_text": reliability["text"],
            "present_image": present["image"],
            "present_text": present["text"],
            "present_labs": present["labs"],
        }
    )
    return X, y, latent


# --------------------------------------------------------------------------- checks


def _check_per_modality(
    name: str,
    value,
    *,
    default: float | Mapping[str, float],
    low: float,
    high: float | None,
    closed_high: bool = True,
) -> dict[str, float]:
    """Turn a float or a {modality: float} dict into a full, checked dict.

    ``validate_params`` checks the type (float or mapping); the values of a
    mapping, and which keys it may have, are checked here.
    """
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(MODALITIES), key=str)
        if unknown:
            raise ValueError(
                f"{name} names unknown modalities {unknown!r}; the modalities are "
                f"{list(MODALITIES)!r}."
            )
        fallback = default if isinstance(default, Mapping) else dict.fromkeys(MODALITIES, default)
        values = {m: value.get(m, fallback[m]) for m in MODALITIES}
    else:
        values = dict.fromkeys(MODALITIES, value)
    if high is None:
        expected = f"a float >= {low}"
    else:
        expected = f"a float in [{low}, {high}{']' if closed_high else ')'}"
    for m, v in values.items():
        where = f"{name}[{m!r}]" if isinstance(value, Mapping) else name
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or np.isnan(v):
            raise TypeError(
                f"{where} must be {expected}, or a dict of such floats keyed by "
                f"modality. Got {v!r} instead."
            )
        too_high = high is not None and (v > high if closed_high else v >= high)
        if v < low or too_high:
            raise ValueError(f"{where} must be {expected}. Got {v!r} instead.")
        values[m] = float(v)
    return values


# ---------------------------------------------------------------------- missingness


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _label_missing_probability(y: np.ndarray, n_classes: int, rate: float) -> np.ndarray:
    """Per-row missing probabilities, decreasing with the class, averaging to ``rate``."""
    shift = _LABEL_MISSING_SHIFT * (1.0 - 2.0 * y / (n_classes - 1))
    lo, hi = -30.0, 30.0
    for _ in range(100):  # bisection on the intercept
        mid = 0.5 * (lo + hi)
        if _sigmoid(mid + shift).mean() < rate:
            lo = mid
        else:
            hi = mid
    return _sigmoid(0.5 * (lo + hi) + shift)


def _draw_presence(
    y: np.ndarray,
    n_classes: int,
    rates: dict[str, float],
    missingness: str,
    *,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    n = len(y)
    present = {}
    for m in MODALITIES:
        u = rng.random(n)
        if rates[m] == 0.0:
            p = np.zeros(n)
        elif missingness == "random":
            p = np.full(n, rates[m])
        else:
            p = _label_missing_probability(y, n_classes, rates[m])
        present[m] = u >= p
    return present


# --------------------------------------------------------------------------- images


class _RadiographRenderer:
    """Draws a chest-radiograph-like frontal view on a fixed pixel grid."""

    def __init__(self, size: int) -> None:
        self.size = size
        grid = (np.arange(size) + 0.5) / size * 2.0 - 1.0
        self.v, self.u = np.meshgrid(grid, grid, indexing="ij")  # v: down, u: right

    @staticmethod
    def _soft_ellipse(u, v, cu, cv, au, av, edge=0.08):
        r = np.sqrt(((u - cu) / au) ** 2 + ((v - cv) / av) ** 2)
        return _sigmoid((1.0 - r) / edge)

    def render(self, signal: float, reliability: float, rng: np.random.Generator) -> np.ndarray:
        du, dv = rng.normal(0.0, 0.04, 2)
        u, v = self.u - du, self.v - dv
        body_w = rng.uniform(0.78, 0.95)
        img = 0.04 + 0.5 * self._soft_ellipse(u, v, 0.0, 0.15, body_w, 1.05, edge=0.05)
        lungs = np.zeros_like(u)
        lung_w, lung_h = rng.uniform(0.24, 0.32), rng.uniform(0.5, 0.6)
        for side in (-1.0, 1.0):
            lungs = np.maximum(
                lungs, self._soft_ellipse(u, v, side * 0.4, -0.02, lung_w, lung_h, edge=0.1)
            )
        img = img - 0.33 * lungs
        # Ribs: bright arcs across the lung fields.
        arc = v - 0.35 * u**2
        ribs = (np.cos(2.0 * np.pi * arc / 0.19 + rng.uniform(0, 2 * np.pi)) > 0.55).astype(float)
        img = img + 0.09 * ribs * lungs
        # Spine and heart shadow.
        img = img + 0.22 * self._soft_ellipse(u, v, 0.0, 0.1, 0.07, 1.2, edge=0.2)
        img = img + 0.25 * self._soft_ellipse(
            u, v, rng.uniform(0.05, 0.15), 0.3, rng.uniform(0.22, 0.3), 0.28, edge=0.12
        )

        strength = _sigmoid(1.6 * signal - 0.4)
        # Opacity: size and density grow with the signal; side and height are nuisance.
        side = rng.choice((-1.0, 1.0))
        cu, cv = side * rng.uniform(0.3, 0.5), rng.uniform(-0.3, 0.35)
        radius = 0.05 + 0.25 * strength
        blob = self._soft_ellipse(u, v, cu, cv, radius, radius * rng.uniform(0.8, 1.25), 0.3)
        img = img + 0.45 * strength * blob * lungs
        # Interstitial texture: frequency and contrast grow with the signal.
        freq = 2.0 + 5.0 * strength
        texture = np.cos(2 * np.pi * freq * u + rng.uniform(0, 2 * np.pi)) * np.cos(
            2 * np.pi * freq * v + rng.uniform(0, 2 * np.pi)
        )
        img = img + 0.12 * strength * texture * lungs

        img = img * rng.uniform(0.9, 1.1) + rng.uniform(-0.04, 0.04)
        img = img + rng.normal(0.0, 0.02 + 0.22 * (1.0 - reliability), img.shape)
        return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def _write_png(pixels: np.ndarray, path: str) -> None:
    from PIL import Image

    Image.fromarray(pixels).save(path, format="PNG", compress_level=1)


# ----------------------------------------------------------------------------- text

_FINDINGS = {
    "consolidation": ("consolidation", "airspace disease", "airspace opacity"),
    "effusion": ("pleural effusion", "effusion", "pleural fluid"),
    "infiltrate": ("infiltrate", "interstitial opacities", "reticular markings"),
    "edema": ("pulmonary edema", "vascular congestion", "interstitial edema"),
    "atelectasis": ("atelectasis", "volume loss", "subsegmental atelectasis"),
}
_LOCATIONS = (
    "right lower lobe", "left lower lobe", "right upper lobe", "lingula",
    "lung bases", "right base", "left base", "perihilar region",
)
_SEVERITY = (
    ("minimal", "trace", "subtle"),
    ("mild", "small"),
    ("moderate", "patchy"),
    ("extensive", "severe", "large", "dense"),
)
_POSITIVE = (
    "There is {sev} {f} in the {loc}.",
    "{Sev} {f} is seen in the {loc}.",
    "{Sev} {f} at the {loc}.",
    "Findings of {sev} {f} involving the {loc}.",
)
_HEDGED_POSITIVE = (
    "Possible {sev} {f} in the {loc}.",
    "Cannot exclude {f} in the {loc}.",
    "Questionable {f} at the {loc}, may represent artifact.",
    "There may be {sev} {f} in the {loc}.",
)
_NEGATIVE = (
    "No evidence of {f}.",
    "No {f}.",
    "Negative for {f}.",
    "There is no {f}.",
)
_HEDGED_NEGATIVE = (
    "No definite {f}.",
    "Probably no {f}, although evaluation is limited.",
    "{F} is not clearly seen.",
)
_NORMAL = (
    "The lungs are clear.",
    "Heart size is within normal limits.",
    "The cardiomediastinal silhouette is normal.",
    "No pneumothorax.",
)
_IRRELEVANT = (
    "Degenerative changes of the thoracic spine.",
    "Surgical clips in the upper abdomen.",
    "Patient is rotated.",
    "Comparison is made to a prior outside study.",
    "Visualized osseous structures are intact.",
    "Limited examination due to patient motion.",
    "Portable technique.",
    "Old healed rib fracture on the left.",
    "Report dictated by the on-call resident.",
)


def _pick(options, rng: np.random.Generator):
    return options[rng.integers(len(options))]


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def _write_report(signal: float, reliability: float, rng: np.random.Generator) -> str:
    vagueness = 1.0 - reliability
    sentences = []
    concepts = list(_FINDINGS)
    n_mentions = 1 + rng.integers(0, 3)
    chosen = rng.choice(len(concepts), size=n_mentions, replace=False)
    level = int(np.digitize(signal, (0.3, 0.9, 1.6)))
    for idx in chosen:
        finding = _pick(_FINDINGS[concepts[idx]], rng)
        hedge = rng.random() < 0.8 * vagueness
        if rng.random() < _sigmoid(4.0 * (signal - 0.3)):
            sev = _pick(_SEVERITY[level], rng)
            template = _pick(_HEDGED_POSITIVE if hedge else _POSITIVE, rng)
            sentence = template.format(
                sev=sev, Sev=_capitalize(sev), f=finding, loc=_pick(_LOCATIONS, rng)
            )
        else:
            template = _pick(_HEDGED_NEGATIVE if hedge else _NEGATIVE, rng)
            sentence = template.format(f=finding, F=_capitalize(finding))
        sentences.append(sentence)
    if signal < 0.0:
        sentences.extend(_pick(_NORMAL, rng) for _ in range(1 + rng.integers(0, 2)))
    for _ in range(rng.poisson(0.4 + 2.5 * vagueness)):
        sentences.append(_pick(_IRRELEVANT, rng))
    order = rng.permutation(len(sentences))
    body = " ".join(sentences[i] for i in order)

    if rng.random() < 0.6 * vagueness:
        impression = _pick(
            ("Indeterminate findings, clinical correlation recommended.",
             "Nonspecific findings; follow-up suggested."),
            rng,
        )
    elif signal > 0.8:
        impression = _pick(
            ("Findings concerning for pneumonia.", "Acute process, likely infectious.",
             f"{_capitalize(_pick(_SEVERITY[level], rng))} airspace disease."),
            rng,
        )
    elif signal < -0.3:
        impression = _pick(
            ("No acute cardiopulmonary process.", "No acute disease.", "Normal chest."),
            rng,
        )
    else:
        impression = _pick(
            ("Mild nonspecific changes.", "No acute cardiopulmonary process."), rng
        )
    return f"FINDINGS: {body} IMPRESSION: {impression}"


# ----------------------------------------------------------------------------- labs


def _draw_labs(z: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = len(z)
    return {
        "wbc": np.round(np.clip(7.5 + 2.0 * z + rng.normal(0, 1.5, n), 1.0, None), 1),
        "crp": np.round(np.exp(1.5 + 0.6 * z + rng.normal(0, 0.6, n)), 1),
        "heart_rate": np.round(80.0 + 7.0 * z + rng.normal(0, 9.0, n)),
        "temperature": np.round(37.0 + 0.3 * z + rng.normal(0, 0.35, n), 1),
        "spo2": np.round(np.clip(96.5 - 1.2 * z + rng.normal(0, 1.5, n), 70, 100)),
    }
