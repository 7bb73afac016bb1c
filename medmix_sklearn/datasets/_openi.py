"""Loader for the Indiana University chest X-ray collection (OpenI)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import re
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from ..exceptions import MissingExtraError

__all__ = ["load_openi", "OPENI_TARGETS"]

logger = logging.getLogger(__name__)

_REPORTS_FILE = "NLMCXR_reports.tgz"
_METADATA_FILE = "nlmcxr_dicom_metadata.csv.gz"
_VIEW_FILE = "nlmcxr_tsne_pa.csv.gz"
_SECTIONS = {
    "INDICATION": "indication",
    "COMPARISON": "comparison",
    "FINDINGS": "findings",
    "IMPRESSION": "impression",
}
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm")
_FRONTAL = {"PA", "AP"}
_LATERAL = {"LL", "RL", "L", "LATERAL", "LARGE LATERAL", "LLAT", "RLAT"}
_NORMAL = "normal"
_UNINDEXED = "no indexing"
# Text made only of the de-identification mask "XXXX", punctuation and spaces.
_MASK_ONLY = re.compile(r"(?:XXXX|[^\w]|_)*")

#: Targets of :func:`load_openi`: name -> MeSH major heading (the part of a major
#: label before the first "/", compared case-insensitively). ``"abnormal"`` is any
#: major label other than "normal".
OPENI_TARGETS = {
    "abnormal": None,
    "cardiomegaly": "cardiomegaly",
    "opacity": "opacity",
    "atelectasis": "pulmonary atelectasis",
    "calcinosis": "calcinosis",
    "calcified_granuloma": "calcified granuloma",
    "pleural_effusion": "pleural effusion",
    "nodule": "nodule",
}

_DESCR = """\
Indiana University chest X-ray collection (OpenI)
-------------------------------------------------

Radiology reports of chest X-ray studies from Indiana University hospitals,
de-identified (the mask "XXXX" replaces removed words) and indexed with MeSH
terms. One row per report (study). Demner-Fushman D, Kohli MD, Rosenman MB,
et al. Preparing a collection of radiology examinations for distribution and
retrieval. J Am Med Inform Assoc. 2016;23(2):304-10. doi:10.1093/jamia/ocv080.

License: CC BY-NC-ND 4.0. medmix_sklearn reads the files at run time and never
redistributes them.

data columns: study_id, indication, comparison, findings, impression (str or
None; empty text and text made only of "XXXX" masks are None), age (years at
the study, from the DICOM birth and study dates; NaN where unknown), image_id
(the study's primary image, frontal where the view is known), image_path
(only with image_dir; None where no file matches).
frame adds mesh_major and mesh_automatic ("|"-joined MeSH labels) and the
targets. Reports indexed only as "No Indexing" carry no label and are left out.

targets: abnormal (any MeSH major label other than "normal"), and one column
per frequent MeSH major heading: cardiomegaly, opacity, atelectasis
("Pulmonary Atelectasis"), calcinosis, calcified_granuloma, pleural_effusion,
nodule.
"""


def load_openi(
    path=None,
    *,
    image_dir=None,
    metadata_path=None,
    targets="abnormal",
    return_X_y=False,
):
    """Load the OpenI (Indiana University) chest X-ray reports.

    One row per radiology report: its sections as text, the patient's age at the
    study, and MeSH-derived binary targets. The files are read at run time; their
    license (CC BY-NC-ND 4.0) does not allow copying them into other projects.

    Parameters
    ----------
    path : str or path-like, default=None
        The reports of a local OpenI download: the folder of ``ecgen-radiology``
        XML files (searched recursively), or the ``NLMCXR_reports.tgz`` archive.
        With ``None``, the copy packaged in the ``torchxrayvision`` wheel's
        ``data/`` folder is read without importing torchxrayvision (install it
        with ``pip install "medmix_sklearn[openi]"``).

    image_dir : str or path-like, default=None
        Folder of the OpenI images (for example the extracted ``NLMCXR_png.tgz``),
        searched recursively for files named ``{image id}.png`` (also ``.jpg``,
        ``.jpeg``, ``.dcm``), such as ``CXR1_1_IM-0001-3001.png``. Adds the
        ``image_path`` column: one image per study, frontal where the view is
        known. With ``None`` there is no image column.

    metadata_path : str or path-like, default=None
        CSV of DICOM metadata with the columns ``imageid``,
        ``Patient's Birth Date`` and ``Study Date`` (``YYYYMMDD``) and optionally
        ``View Position``, as ``nlmcxr_dicom_metadata.csv.gz`` in torchxrayvision.
        With ``None``, that packaged file is used when torchxrayvision is
        installed; otherwise ``age`` is NaN (a warning is logged) and views are
        unknown.

    targets : str or list of str, default="abnormal"
        Target name(s) among ``OPENI_TARGETS``: ``"abnormal"``,
        ``"cardiomegaly"``, ``"opacity"``, ``"atelectasis"``, ``"calcinosis"``,
        ``"calcified_granuloma"``, ``"pleural_effusion"``, ``"nodule"``; or
        ``"all"``.

    return_X_y : bool, default=False
        Return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        With ``data`` (DataFrame: ``study_id``, ``indication``, ``comparison``,
        ``findings``, ``impression``, ``age``, ``image_id``, and ``image_path``
        with ``image_dir``), ``target`` (Series of 0/1 named after the target
        when ``targets`` is a str, else a DataFrame), ``frame`` (data, then
        ``mesh_major`` and ``mesh_automatic``, then the targets),
        ``feature_names``, ``target_names`` and ``DESCR``. The MeSH labels are
        only in ``frame``: the targets are derived from them.

    (data, target) : tuple if ``return_X_y`` is True

    Notes
    -----
    Text that is empty, or made only of the de-identification mask ``XXXX`` and
    punctuation, is None. Age is in whole years, from the birth and study dates
    of the first of the study's images found in the metadata. Reports indexed
    only as "No Indexing" have no label and are left out (95 of the 3,955
    packaged reports).

    Examples
    --------
    >>> from medmix_sklearn.datasets import load_openi
    >>> X, y = load_openi(return_X_y=True)  # doctest: +SKIP
    >>> X.shape  # doctest: +SKIP
    (3860, 7)
    """
    target_names = _check_targets(targets)
    packaged = None
    if path is None:
        packaged = _packaged_data_dir()
        if packaged is None:
            raise MissingExtraError(
                "load_openi() without a path reads the OpenI reports packaged in the "
                "torchxrayvision wheel, which is not installed. Install it with "
                'pip install "medmix_sklearn[openi]", or pass path= to a local OpenI '
                "download (the ecgen-radiology XML folder or NLMCXR_reports.tgz)."
            )
        path = packaged / _REPORTS_FILE
    reports = _read_reports(Path(os.fspath(path)))

    view_path = None
    if metadata_path is None:
        data_dir = packaged if packaged is not None else _packaged_data_dir()
        if data_dir is not None and (data_dir / _METADATA_FILE).is_file():
            metadata_path = data_dir / _METADATA_FILE
            view_path = data_dir / _VIEW_FILE
        else:
            logger.warning(
                "No DICOM metadata for OpenI: age is NaN. Pass metadata_path= or "
                'install torchxrayvision (pip install "medmix_sklearn[openi]").'
            )
    metadata = _read_metadata(metadata_path, view_path)

    images = _index_images(Path(os.fspath(image_dir))) if image_dir is not None else None
    frame = _build_frame(reports, metadata, images)
    if images is not None and frame["image_path"].isna().all():
        raise ValueError(
            f"No file in image_dir={os.fspath(image_dir)!r} is named after an OpenI "
            "image id of these reports (such as 'CXR1_1_IM-0001-3001.png'). Point "
            "image_dir at the folder of the extracted OpenI PNG images."
        )

    feature_names = [c for c in frame.columns if c not in ("mesh_major", "mesh_automatic")]
    heads = frame["mesh_major"].map(_major_heads)
    for name in target_names:
        heading = OPENI_TARGETS[name]
        if heading is None:
            values = heads.map(lambda h: any(x != _NORMAL for x in h))
        else:
            values = heads.map(lambda h, heading=heading: heading in h)
        frame[name] = values.astype(np.int64)

    X = frame[feature_names].copy()
    if isinstance(targets, str) and targets != "all":
        y = frame[target_names[0]].copy()
    else:
        y = frame[target_names].copy()
    if return_X_y:
        return X, y
    return Bunch(
        data=X,
        target=y,
        frame=frame,
        feature_names=feature_names,
        target_names=target_names,
        DESCR=_DESCR,
    )


def _check_targets(targets) -> list[str]:
    names = list(OPENI_TARGETS) if targets == "all" else (
        [targets] if isinstance(targets, str) else list(targets)
    )
    unknown = [t for t in names if t not in OPENI_TARGETS]
    if unknown or not names:
        raise ValueError(
            f"targets must be 'all' or name(s) among {list(OPENI_TARGETS)!r}. "
            f"Got {targets!r} instead."
        )
    return names


def _packaged_data_dir() -> Path | None:
    """The torchxrayvision ``data/`` folder holding the OpenI files, without importing it."""
    locations: list[Path] = []
    try:
        spec = importlib.util.find_spec("torchxrayvision")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        locations.extend(Path(p) / "data" for p in spec.submodule_search_locations)
    try:
        files = importlib.metadata.files("torchxrayvision") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    locations.extend(Path(f.locate()).parent for f in files if f.name == _REPORTS_FILE)
    for location in locations:
        if (location / _REPORTS_FILE).is_file():
            return location
    return None


# ------------------------------------------------------------------------- reports


def _read_reports(path: Path) -> list[dict]:
    if not path.exists():
        raise FileNotFoundError(
            f"OpenI path {str(path)!r} does not exist. Pass the ecgen-radiology XML "
            "folder or the NLMCXR_reports.tgz archive."
        )
    reports = []
    if path.is_dir():
        files = sorted(path.rglob("*.xml"))
        for file in files:
            with open(file, "rb") as fh:
                reports.append(_parse_report(fh.read(), str(file)))
    elif tarfile.is_tarfile(path):
        with tarfile.open(path) as archive:
            for member in archive.getmembers():
                if member.isfile() and member.name.endswith(".xml"):
                    content = archive.extractfile(member).read()
                    reports.append(_parse_report(content, f"{path}:{member.name}"))
    else:
        raise ValueError(
            f"OpenI path {str(path)!r} is neither a folder nor a tar archive. Pass the "
            "ecgen-radiology XML folder or the NLMCXR_reports.tgz archive."
        )
    if not reports:
        raise ValueError(
            f"No XML report found in {str(path)!r}. Expected OpenI ecgen-radiology "
            "files such as '1.xml'."
        )
    reports.sort(key=lambda r: _natural_key(r["study_id"]))
    return reports


def _natural_key(text: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))


def _parse_report(content: bytes, source: str) -> dict:
    try:
        root = ET.fromstring(content)
    except ET.ParseError as exc:
        raise ValueError(f"Cannot parse OpenI report {source!r}: {exc}.") from exc
    uid = root.find("uId")
    iux = root.find("IUXRId")
    if uid is not None and uid.get("id"):
        study_id = uid.get("id")
    elif iux is not None and iux.get("id"):
        study_id = f"CXR{iux.get('id')}"
    else:
        raise ValueError(
            f"OpenI report {source!r} has neither a <uId id=...> nor an <IUXRId id=...> "
            "element; is it an ecgen-radiology XML file?"
        )
    record = {"study_id": study_id}
    record.update(dict.fromkeys(_SECTIONS.values()))
    for node in root.iter("AbstractText"):
        column = _SECTIONS.get((node.get("Label") or "").upper())
        if column is not None:
            record[column] = _clean_text("".join(node.itertext()))
    record["mesh_major"] = [n.text.strip() for n in root.findall("MeSH/major") if n.text]
    record["mesh_automatic"] = [
        n.text.strip() for n in root.findall("MeSH/automatic") if n.text
    ]
    record["image_ids"] = [n.get("id") for n in root.findall("parentImage") if n.get("id")]
    return record


def _clean_text(text: str | None) -> str | None:
    if text is None:
        return None
    text = " ".join(text.split())
    if _MASK_ONLY.fullmatch(text):
        return None
    return text


def _major_heads(labels: str) -> set[str]:
    return {label.split("/")[0].strip().lower() for label in labels.split("|") if label}


# ------------------------------------------------------------------------ metadata


def _read_metadata(metadata_path, view_path) -> pd.DataFrame:
    """Per image id: ``age`` (whole years at the study) and ``view`` (frontal/lateral/None)."""
    empty = pd.DataFrame({"age": pd.Series(dtype=float), "view": pd.Series(dtype=object)})
    if metadata_path is None:
        return empty
    birth, study, position = "Patient's Birth Date", "Study Date", "View Position"
    header = pd.read_csv(metadata_path, nrows=0).columns
    missing = [c for c in ("imageid", birth, study) if c not in header]
    if missing:
        raise ValueError(
            f"metadata_path={os.fspath(metadata_path)!r} lacks the columns {missing!r}. "
            "Expected a CSV such as torchxrayvision's nlmcxr_dicom_metadata.csv.gz with "
            "'imageid', \"Patient's Birth Date\" and 'Study Date' (YYYYMMDD)."
        )
    usecols = ["imageid", birth, study] + ([position] if position in header else [])
    meta = pd.read_csv(metadata_path, usecols=usecols, dtype=str)
    meta = meta.drop_duplicates("imageid").set_index("imageid")
    b = pd.to_datetime(meta[birth].str.strip(), format="%Y%m%d", errors="coerce")
    s = pd.to_datetime(meta[study].str.strip(), format="%Y%m%d", errors="coerce")
    before_birthday = (s.dt.month < b.dt.month) | (
        (s.dt.month == b.dt.month) & (s.dt.day < b.dt.day)
    )
    age = (s.dt.year - b.dt.year - before_birthday.astype(float)).astype(float)
    age[(age < 0) | (age > 120)] = np.nan
    out = pd.DataFrame({"age": age, "view": None}, index=meta.index)
    if position in meta:
        out["view"] = meta[position].map(_view_kind)
    if view_path is not None and Path(view_path).is_file():
        tsne = pd.read_csv(view_path, dtype=str).drop_duplicates("imageid")
        tsne = tsne.set_index("imageid")["tsne-view"].map(_view_kind)
        out = out.reindex(out.index.union(tsne.index))
        out["view"] = out["view"].where(out["view"].notna(), tsne.reindex(out.index))
    return out


def _view_kind(value) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip().upper()
    if value in _FRONTAL:
        return "frontal"
    if value in _LATERAL:
        return "lateral"
    return None


def _index_images(image_dir: Path) -> dict[str, str]:
    if not image_dir.is_dir():
        raise FileNotFoundError(
            f"image_dir {str(image_dir)!r} is not a folder. Pass the folder of the "
            "extracted OpenI images."
        )
    found: dict[str, str] = {}
    rank: dict[str, int] = {}
    for root, _, files in os.walk(image_dir):
        for name in files:
            stem, suffix = os.path.splitext(name)
            suffix = suffix.lower()
            if suffix in _IMAGE_SUFFIXES:
                r = _IMAGE_SUFFIXES.index(suffix)
                if stem not in found or r < rank[stem]:
                    found[stem] = os.path.abspath(os.path.join(root, name))
                    rank[stem] = r
    return found


# ------------------------------------------------------------------------- assembly

_VIEW_ORDER = {"frontal": 0, None: 1, "lateral": 2}


def _metadata_key(image_id: str, table: dict) -> str | None:
    """The metadata id of an image; a few XML ids carry an extra ``_1`` after ``CXRn``."""
    if image_id in table:
        return image_id
    alias = re.sub(r"^(CXR\d+)_\d+_", r"\1_", image_id)
    return alias if alias in table else None


def _build_frame(
    reports: list[dict], metadata: pd.DataFrame, images: dict[str, str] | None
) -> pd.DataFrame:
    ages = metadata["age"].to_dict()
    views = metadata["view"].to_dict()
    rows = []
    for report in reports:
        if not report["mesh_major"] or all(
            label.lower() == _UNINDEXED for label in report["mesh_major"]
        ):
            continue
        ids = report["image_ids"]
        keys = [_metadata_key(i, ages) for i in ids]
        age = next((ages[k] for k in keys if k is not None and not pd.isna(ages[k])), np.nan)
        view_of = {i: views.get(k) for i, k in zip(ids, keys)}
        ranked = sorted(ids, key=lambda i: _VIEW_ORDER.get(view_of[i], 1))
        image_id = ranked[0] if ranked else None
        row = {
            "study_id": report["study_id"],
            **{c: report[c] for c in _SECTIONS.values()},
            "age": float(age),
            "image_id": image_id,
        }
        if images is not None:
            path = next((images[i] for i in ranked if i in images), None)
            if path is not None:
                row["image_id"] = Path(path).stem
            row["image_path"] = path
        row["mesh_major"] = "|".join(report["mesh_major"])
        row["mesh_automatic"] = "|".join(report["mesh_automatic"]) or None
        rows.append(row)
    columns = ["study_id", *_SECTIONS.values(), "age", "image_id"]
    if images is not None:
        columns.append("image_path")
    columns += ["mesh_major", "mesh_automatic"]
    # object columns keep None (pandas 3 would turn it into NaN in a str column)
    frame = pd.DataFrame(
        {
            c: pd.Series([row.get(c) for row in rows], dtype=float if c == "age" else object)
            for c in columns
        }
    )
    return frame
