"""Loader for MMIST-ccRCC (kidney cancer, 12-month survival) from its published features."""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from .._layout import expert_feature_names, tabular_feature_names

__all__ = ["load_mmist_ccrcc"]

logger = logging.getLogger(__name__)

_REPO = "https://github.com/Multi-Modal-IST/multi-modal-ist.github.io"
_SUBDIR = Path("benchmarks") / "ccRCC" / "Code"
_CLINICAL_FILE = "clinical+genomic_split.csv"
_TARGET = "vital_status_12"
_SPLIT = "Split"
_ID = "case_id"
#: The features of each image modality: (modality, folder under ``Features``).
_IMAGE_MODALITIES = (("ct", "CT Features"), ("mri", "MRI Features"), ("wsi", "WSI Features"))
#: Name of the expert of the image blocks: the published features of MMIST-ccRCC.
_EXPERT = "mmist"
#: Clinical columns of the source table -> feature names of the ``clinical`` block.
_CLINICAL = {
    "gender": "gender",
    "age_diag": "age_diag",
    "grade": "grade",
    "cancer_history": "cancer_history",
    "ajcc_path_tumor_pt": "ajcc_path_tumor_pt",
    "ajcc_path_nodes_pn": "ajcc_path_nodes_pn",
    "ajcc_clin_metastasis_cm": "ajcc_clin_metastasis_cm",
    "ajcc_path_metastasis_pm": "ajcc_path_metastasis_pm",
    "ajcc_path_tumor_stage": "ajcc_path_tumor_stage",
    "race_Asian": "race_asian",
    "race_Black or African American": "race_black",
    "race_Hispanic or Latino": "race_hispanic",
    "race_White": "race_white",
    "race_other": "race_other",
}
#: Columns whose code -1 means "not recorded".
_MINUS_ONE_MISSING = (
    "ajcc_path_tumor_pt",
    "ajcc_path_nodes_pn",
    "ajcc_clin_metastasis_cm",
    "ajcc_path_metastasis_pm",
    "ajcc_path_tumor_stage",
)
#: Mutation columns of the source table (-1: not sequenced) -> ``genomics`` features.
#: The source spells the PBRM1 gene "PBMR1".
_GENOMICS = {"VHL_mutation": "vhl", "PBMR1_mutation": "pbrm1", "TTN_mutation": "ttn"}
_AGGREGATES = ("mean", "max")

_DESCR = f"""\
MMIST-ccRCC: clear-cell renal cell carcinoma, 12-month survival
---------------------------------------------------------------

618 patients of the CPTAC-CCRCC and TCGA-KIRC studies, curated by Mota T,
Verdelho MRF, Araujo DJP, Bissoto A, Santiago C, Barata C. MMIST-ccRCC: A
Real-World Medical Dataset for the Development of Multi-Modal Systems. CVPR
2024 Workshop on Data Curation and Augmentation in Enhancing Medical Imaging
Applications; arXiv:2405.01658. Source: {_REPO}
(folder benchmarks/ccRCC/Code; GPL-3.0). medmix_sklearn reads a local copy at
run time and never redistributes it.

One row per patient (index case_id), in medmix_sklearn's block layout:
clinical__* (14 columns: gender, age at diagnosis (binned), grade, cancer
history (1 or missing in the source), five AJCC codes with -1 read as missing,
five race indicators), genomics__vhl/pbrm1/ttn (mutation 0/1; -1, not
sequenced, read as missing, so the block is absent for 156 patients),
ct__mmist__k and mri__mmist__k (512-d features per CT or MRI volume) and
wsi__mmist__k (1,024-d features per whole-slide image), averaged (or
max-pooled) over a patient's volumes or slides; a modality without any file
for the patient is NaN in all its columns. Present: clinical 618, genomics 462,
WSI 618, CT 239, MRI 52 patients.

target: vital_status_12 as published (0 for the 75 patients who died within
12 months, 1 otherwise). split: the official "train" (497) / "test" (121).
"""


def load_mmist_ccrcc(path, *, aggregate="mean", return_X_y=False):
    """Load MMIST-ccRCC (kidney cancer, 12-month survival) in the block layout.

    Reads a local copy of the ``benchmarks/ccRCC/Code`` folder of the
    ``Multi-Modal-IST/multi-modal-ist.github.io`` GitHub repository: the
    clinical and genomic table with the official split, and the per-volume
    (CT, MRI) and per-slide (WSI) feature files that the data set's authors
    published. Get it with ``git clone --depth 1
    https://github.com/Multi-Modal-IST/multi-modal-ist.github.io`` (about 30
    MB) or by downloading that folder. Its license (GPL-3.0) does not allow
    copying it into this project: it is read at run time.

    Parameters
    ----------
    path : str or path-like
        The ``Code`` folder (holding ``clinical+genomic_split.csv`` and
        ``Features/``), or a folder above it such as the clone's root.

    aggregate : {"mean", "max"}, default="mean"
        How a patient's several CT or MRI volumes, or whole-slide images, become
        one feature vector: their mean, or their element-wise maximum.

    return_X_y : bool, default=False
        Return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        With ``data`` (DataFrame indexed by ``case_id``; columns
        ``clinical__*``, ``genomics__*``, ``ct__mmist__k``, ``mri__mmist__k``,
        ``wsi__mmist__k``, NaN where a modality is absent or a value was not
        recorded), ``target`` (Series ``vital_status_12``: 0 for a death within
        12 months, 1 otherwise), ``split`` (Series of ``"train"``/``"test"``,
        the official split), ``frame`` (data, target and split),
        ``modalities`` (``{modality: list of column names}``),
        ``feature_names``, ``target_names`` and ``DESCR``.

    (data, target) : tuple if ``return_X_y`` is True

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist, or the clinical table or a feature folder
        is missing; the message names what is missing.
    ValueError
        If ``aggregate`` is unknown, a file lacks expected columns, a feature
        folder holds no ``.npz`` file, or a feature file cannot be read (for
        example a Git LFS pointer instead of the data).

    Notes
    -----
    Feature files are named ``{case_id}-{n}.npz`` (CT, MRI, CPTAC slides) or
    after the TCGA slide barcode (``TCGA-XX-XXXX-...``); each holds one array
    (``arr_0``) with the features of one volume or slide. Files of patients
    not in the clinical table (476 TCGA slides) are ignored. The ``cancer_history``
    column is 1 or empty in the source and is kept so (empty as NaN).

    Examples
    --------
    >>> from medmix_sklearn.datasets import load_mmist_ccrcc
    >>> bunch = load_mmist_ccrcc("multi-modal-ist.github.io")  # doctest: +SKIP
    >>> train = bunch.split == "train"  # doctest: +SKIP
    >>> X_train, y_train = bunch.data[train], bunch.target[train]  # doctest: +SKIP
    >>> X_train.shape  # doctest: +SKIP
    (497, 2065)
    """
    if aggregate not in _AGGREGATES:
        raise ValueError(f"aggregate must be one of {list(_AGGREGATES)!r}. Got {aggregate!r} instead.")
    if not isinstance(return_X_y, (bool, np.bool_)):
        raise ValueError(f"return_X_y must be a bool. Got {return_X_y!r} instead.")
    root = _find_root(Path(os.fspath(path)))
    table = _read_table(root / _CLINICAL_FILE)
    case_ids = table[_ID].to_numpy()

    clinical = table[list(_CLINICAL)].astype(float)
    for column in _MINUS_ONE_MISSING:
        clinical[column] = clinical[column].mask(clinical[column] == -1)
    clinical.columns = tabular_feature_names("clinical", _CLINICAL.values())
    genomics = table[list(_GENOMICS)].astype(float)
    genomics = genomics.mask(genomics == -1)
    genomics.columns = tabular_feature_names("genomics", _GENOMICS.values())
    blocks = [clinical, genomics]
    for modality, folder in _IMAGE_MODALITIES:
        values = _read_features(root / "Features" / folder, case_ids, aggregate)
        names = expert_feature_names(modality, _EXPERT, values.shape[1])
        blocks.append(pd.DataFrame(values, columns=names))
    data = pd.concat(blocks, axis=1)
    data.index = pd.Index(case_ids, name=_ID)

    target = pd.Series(table[_TARGET].to_numpy(dtype=np.int64), index=data.index, name=_TARGET)
    split = pd.Series(table[_SPLIT].to_numpy(dtype=object), index=data.index, name="split")
    modalities: dict[str, list[str]] = {}
    for name in data.columns:
        modalities.setdefault(name.split("__", 1)[0], []).append(name)
    if return_X_y:
        return data, target
    return Bunch(
        data=data,
        target=target,
        split=split,
        frame=pd.concat([data, target, split], axis=1),
        modalities=modalities,
        feature_names=list(data.columns),
        target_names=[_TARGET],
        DESCR=_DESCR,
    )


def _find_root(path: Path) -> Path:
    """The folder holding the clinical table: ``path`` or ``path/benchmarks/ccRCC/Code``."""
    if not path.exists():
        raise FileNotFoundError(
            f"MMIST-ccRCC path {str(path)!r} does not exist. Pass the benchmarks/ccRCC/Code "
            f"folder of a clone of {_REPO} (git clone --depth 1 {_REPO}.git)."
        )
    for candidate in (path, path / _SUBDIR, path / "ccRCC" / "Code", path / "Code"):
        if (candidate / _CLINICAL_FILE).is_file() or (candidate / "Features").is_dir():
            root = candidate
            break
    else:
        raise FileNotFoundError(
            f"MMIST-ccRCC path {str(path)!r} holds neither {_CLINICAL_FILE!r} nor a Features/ "
            f"folder (nor {str(_SUBDIR)!r} with them). Pass the benchmarks/ccRCC/Code folder of "
            f"a clone of {_REPO}."
        )
    expected = [root / _CLINICAL_FILE] + [root / "Features" / f for _, f in _IMAGE_MODALITIES]
    missing = [str(p.relative_to(root)) for p in expected if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"The MMIST-ccRCC folder {str(root)!r} is incomplete: {missing!r} missing. "
            f"Expected {_CLINICAL_FILE!r} and Features/ with 'CT Features', 'MRI Features' "
            f"and 'WSI Features' (.npz files), as in benchmarks/ccRCC/Code of {_REPO}. "
            "Clone or download the whole folder again."
        )
    return root


def _read_table(file: Path) -> pd.DataFrame:
    table = pd.read_csv(file)
    required = [_ID, _TARGET, _SPLIT, *_CLINICAL, *_GENOMICS]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ValueError(
            f"{str(file)!r} lacks the columns {missing!r}. Expected the MMIST-ccRCC "
            f"clinical table with {required!r}."
        )
    if table[_ID].duplicated().any():
        dup = table.loc[table[_ID].duplicated(), _ID].tolist()[:5]
        raise ValueError(f"{str(file)!r} lists some case_id more than once, e.g. {dup!r}.")
    splits = set(table[_SPLIT].unique())
    if not splits <= {"train", "test"}:
        raise ValueError(
            f"{str(file)!r} column {_SPLIT!r} holds {sorted(map(str, splits))!r}; expected "
            "'train' and 'test'."
        )
    return table


def _case_of(stem: str, known: set) -> str | None:
    """The case id a feature file belongs to: the longest known dash-prefix of its name."""
    parts = stem.split("-")
    for n in range(len(parts) - 1, 0, -1):
        candidate = "-".join(parts[:n])
        if candidate in known:
            return candidate
    return None


def _read_features(folder: Path, case_ids: np.ndarray, aggregate: str) -> np.ndarray:
    """(n_cases, dim) aggregated features of one modality, NaN rows for cases without a file."""
    files = sorted(folder.glob("*.npz"))
    if not files:
        raise ValueError(
            f"The MMIST-ccRCC feature folder {str(folder)!r} holds no .npz file. Download the "
            f"folder's files again from {_REPO} (benchmarks/ccRCC/Code/Features)."
        )
    known = set(case_ids.tolist())
    per_case: dict[str, list[np.ndarray]] = {}
    dim = None
    ignored = 0
    for file in files:
        case = _case_of(file.stem, known)
        if case is None:
            ignored += 1
            continue
        vector = _load_vector(file)
        if dim is None:
            dim = vector.size
        elif vector.size != dim:
            raise ValueError(
                f"MMIST-ccRCC feature file {str(file)!r} holds {vector.size} values where the "
                f"other files of {folder.name!r} hold {dim}. Replace the damaged file."
            )
        per_case.setdefault(case, []).append(vector)
    if ignored:
        logger.info("%s: %d files of patients not in the clinical table ignored.", folder.name, ignored)
    if dim is None:
        raise ValueError(
            f"No file in {str(folder)!r} is named after a case_id of the clinical table "
            "(such as 'C3L-00004-1.npz'); is it the MMIST-ccRCC Features folder?"
        )
    out = np.full((len(case_ids), dim), np.nan)
    pool = np.mean if aggregate == "mean" else np.max
    for i, case in enumerate(case_ids):
        vectors = per_case.get(case)
        if vectors:
            out[i] = pool(np.stack(vectors), axis=0)
    return out


def _load_vector(file: Path) -> np.ndarray:
    try:
        with np.load(file) as archive:
            if len(archive.files) != 1:
                raise ValueError(f"holds arrays {archive.files!r}; expected exactly one")
            vector = np.asarray(archive[archive.files[0]], dtype=np.float64).ravel()
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(
            f"Cannot read MMIST-ccRCC feature file {str(file)!r} ({exc}). Each file should be a "
            ".npz archive with one array of features; a small text file here is usually a Git "
            f"LFS pointer or a failed download. Download it again from {_REPO}."
        ) from exc
    if vector.size == 0 or not np.isfinite(vector).all():
        raise ValueError(
            f"MMIST-ccRCC feature file {str(file)!r} holds no values or non-finite values; "
            "replace the damaged file."
        )
    return vector
