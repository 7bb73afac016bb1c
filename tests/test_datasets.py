"""Tests of the synthetic multimodal generator and the OpenI loader."""

import gzip
import logging
import os
import sys
import tarfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import spearmanr
from sklearn.decomposition import PCA
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline

from medmix_sklearn.datasets import OPENI_TARGETS, _openi, load_openi, make_multimodal_classification
from medmix_sklearn.exceptions import MissingExtraError

LABS = ["wbc", "crp", "heart_rate", "temperature", "spo2"]


def _cv_auroc(model, X, y) -> float:
    proba = cross_val_predict(model, X, y, cv=3, method="predict_proba")[:, 1]
    return roc_auc_score(y, proba)


# ------------------------------------------------------------------- the generator


def test_generator_is_deterministic_including_image_bytes(tmp_path):
    kw = dict(n_samples=40, image_size=32, random_state=7, return_latent=True)
    X1, y1, l1 = make_multimodal_classification(image_dir=tmp_path / "a", **kw)
    X2, y2, l2 = make_multimodal_classification(image_dir=tmp_path / "b", **kw)
    pd.testing.assert_series_equal(y1, y2)
    pd.testing.assert_frame_equal(l1, l2)
    pd.testing.assert_frame_equal(X1.drop(columns="image_path"), X2.drop(columns="image_path"))
    assert X1["image_path"].isna().equals(X2["image_path"].isna())
    for p1, p2 in zip(X1["image_path"].dropna(), X2["image_path"].dropna()):
        assert os.path.basename(p1) == os.path.basename(p2)
        with open(p1, "rb") as f1, open(p2, "rb") as f2:
            assert f1.read() == f2.read()

    X3, _ = make_multimodal_classification(n_samples=40, random_state=8)
    assert not X3["report"].equals(X1["report"])


def test_generator_columns_dtypes_and_shapes(tmp_path):
    X, y = make_multimodal_classification(n_samples=30, image_dir=tmp_path, random_state=0)
    assert list(X.columns) == ["image_path", "report", "age", "sex", *LABS]
    assert X.shape == (30, 9) and y.shape == (30,)
    assert y.name == "target" and y.dtype.kind == "i"
    assert sorted(y.value_counts().tolist()) == [15, 15]
    assert X["image_path"].dtype == object and X["report"].dtype == object
    assert X["sex"].dtype == "category" and set(X["sex"].cat.categories) == {"F", "M"}
    for col in ["age", *LABS]:
        assert X[col].dtype == np.float64
    assert X[["age", "sex"]].notna().all().all()
    # Missing image and report are None, not NaN or "".
    assert all(v is None or isinstance(v, str) and v for v in X["report"])
    assert all(v is None or os.path.isabs(v) for v in X["image_path"])

    X_no_img, _ = make_multimodal_classification(n_samples=30, random_state=0)
    assert "image_path" not in X_no_img.columns
    pd.testing.assert_series_equal(X_no_img["report"], X["report"])


def test_images_are_grayscale_pngs_only_for_present_rows(tmp_path):
    X, _, latent = make_multimodal_classification(
        n_samples=40, image_dir=tmp_path, image_size=48, missing_rate=0.3, random_state=1,
        return_latent=True,
    )
    present = X["image_path"].notna()
    assert present.equals(latent["present_image"])
    assert 0 < (~present).sum() < 40
    assert len(list(tmp_path.glob("*.png"))) == present.sum()
    for path in X["image_path"].dropna():
        with Image.open(path) as im:
            assert im.format == "PNG"
            assert im.mode == "L"
            assert im.size == (48, 48)
            assert np.asarray(im).std() > 10  # not a blank image


def test_missing_rates_close_to_requested():
    X, _, latent = make_multimodal_classification(
        n_samples=3000, missing_rate={"text": 0.3, "labs": 0.1}, cell_missing_rate=0.05,
        random_state=0, return_latent=True,
    )
    assert X["report"].isna().mean() == pytest.approx(0.3, abs=0.03)
    labs_missing = X[LABS].isna().all(axis=1)
    assert labs_missing.mean() == pytest.approx(0.1, abs=0.02)
    assert labs_missing.equals(~latent["present_labs"])
    assert latent["present_image"].all()  # not named in the dict: never missing
    # Single cells: NaN at cell_missing_rate within rows whose labs are present.
    cells = X.loc[~labs_missing, LABS].isna().to_numpy().mean()
    assert cells == pytest.approx(0.05, abs=0.01)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_label_dependent_missingness_depends_on_y(n_classes):
    kw = dict(n_samples=3000, n_classes=n_classes, missing_rate=0.4, random_state=0)
    X, y = make_multimodal_classification(missingness="label", **kw)
    by_class = X["report"].isna().groupby(y).mean()
    assert X["report"].isna().mean() == pytest.approx(0.4, abs=0.03)
    # Sicker (higher) classes have fewer missing modalities, strictly ordered.
    assert np.all(np.diff(by_class.to_numpy()) < -0.05)
    assert by_class.iloc[0] - by_class.iloc[-1] > 0.25

    X, y = make_multimodal_classification(missingness="random", **kw)
    by_class = X["report"].isna().groupby(y).mean()
    assert by_class.max() - by_class.min() < 0.06


def test_each_modality_alone_carries_signal(tmp_path):
    X, y = make_multimodal_classification(
        n_samples=450, image_dir=tmp_path, image_size=32, missing_rate=0.0, random_state=0
    )
    labs = _cv_auroc(make_pipeline(SimpleImputer(), LogisticRegression()), X[LABS], y)
    text = _cv_auroc(
        make_pipeline(TfidfVectorizer(ngram_range=(1, 2)), LogisticRegression(C=3.0)),
        X["report"],
        y,
    )
    pixels = np.stack([np.asarray(Image.open(p), dtype=float) for p in X["image_path"]])
    image = _cv_auroc(
        make_pipeline(PCA(30, random_state=0), LogisticRegression(max_iter=2000)),
        pixels.reshape(len(X), -1) / 255.0,
        y,
    )
    assert labs > 0.65, labs
    assert text > 0.6, text
    assert image > 0.62, image


def test_modalities_are_complementary_and_reliability_is_visible(tmp_path):
    X, y, latent = make_multimodal_classification(
        n_samples=400, image_dir=tmp_path, image_size=32, missing_rate=0.0,
        reliability_spread=0.8, random_state=2, return_latent=True,
    )
    z = latent[["z_image", "z_text", "z_labs"]]
    single = max(roc_auc_score(y, z[c]) for c in z.columns)
    assert single > 0.7
    assert roc_auc_score(y, z.sum(axis=1)) > single + 0.04

    # Image noise: neighbouring-pixel differences grow as reliability falls.
    roughness = [
        np.abs(np.diff(np.asarray(Image.open(p), dtype=float), axis=1)).mean()
        for p in X["image_path"]
    ]
    assert spearmanr(roughness, latent["reliability_image"]).statistic < -0.7
    # Vague text: more hedges and filler as reliability falls.
    vague = X["report"].str.count(
        r"(?i)possible|cannot exclude|questionable|may |definite|probably|not clearly"
        r"|indeterminate|nonspecific|rotated|clips|motion|portable|dictated|osseous"
    )
    assert spearmanr(vague, latent["reliability_text"]).statistic < -0.3


def test_text_has_negations_hedges_and_synonyms():
    X, _ = make_multimodal_classification(n_samples=300, missing_rate=0.0, random_state=0)
    text = " ".join(X["report"])
    for phrase in ["No evidence of", "Possible", "IMPRESSION:", "airspace disease",
                   "consolidation", "pleural fluid"]:
        assert phrase in text
    assert X["report"].nunique() > 250


def test_multiclass_and_latent_frame():
    X, y, latent = make_multimodal_classification(
        n_samples=600, n_classes=3, missing_rate=0.25, random_state=0, return_latent=True
    )
    assert sorted(y.unique()) == [0, 1, 2]
    assert y.value_counts().tolist() == [200, 200, 200]
    assert list(latent.columns) == [
        "z_image", "z_text", "z_labs", "reliability_image", "reliability_text",
        "present_image", "present_text", "present_labs",
    ]
    assert latent.index.equals(X.index)
    assert latent["present_text"].equals(X["report"].notna())
    r = latent[["reliability_image", "reliability_text"]]
    assert ((r >= 0.4) & (r <= 1.0)).all().all()
    # Documented class means: -a cos(2 pi c / 3 + phi_m), phi = 0, pi/3, 2 pi/3.
    means = latent[["z_image", "z_text", "z_labs"]].groupby(y).mean()
    expected = {
        "z_image": -0.7 * np.cos(2 * np.pi * np.arange(3) / 3),
        "z_text": -0.7 * np.cos(2 * np.pi * np.arange(3) / 3 + np.pi / 3),
        "z_labs": -0.6 * np.cos(2 * np.pi * np.arange(3) / 3 + 2 * np.pi / 3),
    }
    for col, values in expected.items():
        np.testing.assert_allclose(means[col], values, atol=0.2)
    # Only all three factors together separate all classes.
    z = latent[["z_image", "z_text", "z_labs"]]
    acc_all = (cross_val_predict(LogisticRegression(), z, y, cv=3) == y).mean()
    acc_one = max(
        (cross_val_predict(LogisticRegression(), z[[c]], y, cv=3) == y).mean()
        for c in z.columns
    )
    assert acc_all > acc_one + 0.1


def test_modality_signal_zero_removes_the_signal():
    _, y, latent = make_multimodal_classification(
        n_samples=2000, modality_signal={"labs": 0.0}, random_state=0, return_latent=True
    )
    assert abs(roc_auc_score(y, latent["z_labs"]) - 0.5) < 0.04
    assert roc_auc_score(y, latent["z_image"]) > 0.75  # others keep their default


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(n_samples=3), ValueError, r"at least 2 \* n_classes = 4.*Got n_samples=3"),
        (dict(n_samples=2.5), TypeError, r"'n_samples' parameter .* must be an int .*Got 2.5"),
        (dict(n_classes=1), ValueError, r"'n_classes' parameter .* range \[2, inf\). Got 1"),
        (dict(image_size=8), ValueError, r"'image_size' parameter .* range \[32, 1024\]"),
        (dict(missing_rate=1.0), ValueError, r"missing_rate must be a float in \[0.0, 1.0\)"),
        (dict(missing_rate=-0.1), ValueError, "Got -0.1 instead"),
        (dict(missing_rate="0.2"), TypeError, r"'missing_rate' parameter .* Got '0.2'"),
        (dict(missing_rate={"xray": 0.1}), ValueError, r"unknown modalities \['xray'\]"),
        (dict(missing_rate={"text": 1.5}), ValueError, r"missing_rate\['text'\]"),
        (dict(missingness="mnar"), ValueError, r"'missingness' parameter .* a str among .*Got 'mnar'"),
        (dict(modality_signal=-1), ValueError, "modality_signal must be a float >= 0.0"),
        (dict(reliability_spread=1.0), ValueError, r"'reliability_spread' parameter .* range \[0.0, 1.0\)"),
        (dict(cell_missing_rate=True), TypeError, r"'cell_missing_rate' parameter .* Got True"),
    ],
)
def test_generator_parameter_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_multimodal_classification(**{"n_samples": 20, **kwargs})


# ----------------------------------------------------------------------- OpenI


def _report_xml(uid, sections, majors, automatic=(), images=()):
    abstract = "\n".join(
        f'<AbstractText Label="{label}">{text}</AbstractText>' for label, text in sections.items()
    )
    mesh = "".join(f"<major>{m}</major>" for m in majors) + "".join(
        f"<automatic>{a}</automatic>" for a in automatic
    )
    imgs = "\n".join(
        f'<parentImage id="{i}"><figureId>F1</figureId><panel type="single">'
        f"<url>/hadoop/storage/radiology/extract/{i}.jpg</url></panel></parentImage>"
        for i in images
    )
    return "\n".join(
        [
            '<?xml version="1.0" encoding="utf-8"?>',
            "<eCitation>",
            '<meta type="rr"/>',
            f'<uId id="{uid}"/>',
            f'<IUXRId id="{uid[3:]}"/>',
            "<MedlineCitation><Article><Abstract>",
            abstract,
            "</Abstract></Article></MedlineCitation>",
            f"<MeSH>{mesh}</MeSH>",
            imgs,
            "</eCitation>",
        ]
    )


_SECTIONS_NORMAL = {
    "COMPARISON": "None.",
    "INDICATION": "Positive TB test",
    "FINDINGS": "The  lungs are clear. There are no XXXX of a pleural effusion.",
    "IMPRESSION": "Normal chest x-XXXX.",
}


def _write_openi(root):
    """A tiny OpenI download: XML reports, DICOM metadata CSV, a PNG folder."""
    xml_dir = root / "ecgen-radiology"
    xml_dir.mkdir(parents=True)
    reports = {
        "1.xml": _report_xml(
            "CXR1", _SECTIONS_NORMAL, ["normal"],
            images=["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"],
        ),
        "2.xml": _report_xml(
            "CXR2",
            {"COMPARISON": "XXXX, XXXX.", "INDICATION": "XXXX", "FINDINGS": "",
             "IMPRESSION": "Borderline cardiomegaly."},
            ["Cardiomegaly/borderline", "Pulmonary Artery/enlarged"],
            automatic=["sternotomy"],
            images=["CXR2_IM-0652-2001", "CXR2_IM-0652-1001"],
        ),
        "3.xml": _report_xml(
            "CXR3",
            {"COMPARISON": "", "INDICATION": "Cough", "FINDINGS": "Left base opacity.",
             "IMPRESSION": "Atelectasis versus pneumonia."},
            ["Opacity/lung/base/left", "Pulmonary Atelectasis/base/left"],
            images=["CXR3_IM-1384-1001"],
        ),
        "4.xml": _report_xml("CXR4", _SECTIONS_NORMAL, ["No Indexing"], images=["CXR4_IM-2050-1001"]),
        "10.xml": _report_xml(
            "CXR10",
            {"COMPARISON": "None", "INDICATION": "Chest pain", "FINDINGS": "Small effusion.",
             "IMPRESSION": "Small right pleural effusion."},
            ["Pleural Effusion/right/small"],
        ),
    }
    for name, text in reports.items():
        (xml_dir / name).write_text(text, encoding="utf-8")
    metadata = pd.DataFrame(
        {
            "imageid": ["CXR1_IM-0001-3001", "CXR1_IM-0001-4001", "CXR2_IM-0652-1001",
                        "CXR2_IM-0652-2001", "CXR3_IM-1384-1001", "CXR4_IM-2050-1001"],
            "Accession Number": ["1", "1", "2", "2", "3", "4"],
            "Patient's Birth Date": ["19550820", "19550820", "19660308", "19660308",
                                     "19401120", "19700101"],
            "Study Date": ["20110328", "20110328", "20120308", "20120308", "20111119",
                           "20120101"],
            "View Position": ["PA", None, "PA", "LL", None, "PA"],
        }
    )
    metadata_path = root / "nlmcxr_dicom_metadata.csv.gz"
    with gzip.open(metadata_path, "wt") as fh:
        metadata.to_csv(fh, index=False)
    png_dir = root / "NLMCXR_png"
    png_dir.mkdir()
    for image_id in ["CXR1_1_IM-0001-3001", "CXR2_IM-0652-1001", "CXR2_IM-0652-2001",
                     "CXR4_IM-2050-1001"]:
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(png_dir / f"{image_id}.png")
    archive = root / "NLMCXR_reports.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(xml_dir, arcname="ecgen-radiology")
    return xml_dir, metadata_path, png_dir, archive


@pytest.fixture
def openi_files(tmp_path):
    return _write_openi(tmp_path / "openi")


def test_load_openi_columns_text_age_and_targets(openi_files):
    xml_dir, metadata_path, _, _ = openi_files
    bunch = load_openi(xml_dir, metadata_path=metadata_path, targets="all")
    X = bunch.data
    assert list(X.columns) == [
        "study_id", "indication", "comparison", "findings", "impression", "age", "image_id",
    ]
    assert bunch.feature_names == list(X.columns)
    # Natural order of study ids; "No Indexing" (CXR4) has no label and is left out.
    assert X["study_id"].tolist() == ["CXR1", "CXR2", "CXR3", "CXR10"]
    # Empty text and XXXX-only text are None; whitespace is normalised; text with
    # XXXX among words is kept.
    assert X["indication"].tolist() == ["Positive TB test", None, "Cough", "Chest pain"]
    assert X["comparison"].tolist() == ["None.", None, None, "None"]
    assert X["findings"].tolist()[:2] == [
        "The lungs are clear. There are no XXXX of a pleural effusion.", None,
    ]
    assert X["impression"].iloc[0] == "Normal chest x-XXXX."
    # Age in whole years at the study; CXR3's birthday (Nov 20) is after the study
    # (Nov 19); CXR1's XML ids carry an extra "_1"; CXR10 has no image.
    np.testing.assert_array_equal(X["age"], [55.0, 46.0, 70.0, np.nan])
    # Primary image: frontal where the view is known.
    assert X["image_id"].tolist() == [
        "CXR1_1_IM-0001-3001", "CXR2_IM-0652-1001", "CXR3_IM-1384-1001", None,
    ]
    assert bunch.frame["mesh_major"].tolist()[1] == "Cardiomegaly/borderline|Pulmonary Artery/enlarged"
    assert bunch.frame["mesh_automatic"].tolist()[:2] == [None, "sternotomy"]
    y = bunch.target
    assert list(y.columns) == list(OPENI_TARGETS) == bunch.target_names
    assert y["abnormal"].tolist() == [0, 1, 1, 1]
    assert y["cardiomegaly"].tolist() == [0, 1, 0, 0]
    assert y["opacity"].tolist() == [0, 0, 1, 0]
    assert y["atelectasis"].tolist() == [0, 0, 1, 0]
    assert y["pleural_effusion"].tolist() == [0, 0, 0, 1]
    assert "mesh_major" not in X.columns  # the targets are derived from it


def test_load_openi_archive_equals_folder_and_return_X_y(openi_files):
    xml_dir, metadata_path, _, archive = openi_files
    X_dir, y_dir = load_openi(xml_dir, metadata_path=metadata_path, return_X_y=True)
    X_tgz, y_tgz = load_openi(archive, metadata_path=metadata_path, return_X_y=True)
    pd.testing.assert_frame_equal(X_dir, X_tgz)
    pd.testing.assert_series_equal(y_dir, y_tgz)
    assert isinstance(y_dir, pd.Series) and y_dir.name == "abnormal"
    _, y2 = load_openi(xml_dir, metadata_path=metadata_path, targets=["nodule", "opacity"],
                       return_X_y=True)
    assert list(y2.columns) == ["nodule", "opacity"]


def test_load_openi_image_dir(openi_files):
    xml_dir, metadata_path, png_dir, _ = openi_files
    X, _ = load_openi(xml_dir, metadata_path=metadata_path, image_dir=png_dir, return_X_y=True)
    assert X.columns[-1] == "image_path"
    names = [None if p is None else os.path.basename(p) for p in X["image_path"]]
    # CXR2: the frontal image (1001, PA) wins over the lateral (2001, LL);
    # CXR3's file is absent; CXR10 has no image.
    assert names == ["CXR1_1_IM-0001-3001.png", "CXR2_IM-0652-1001.png", None, None]
    assert all(os.path.isabs(p) for p in X["image_path"].dropna())

    with pytest.raises(ValueError, match="No file in image_dir=.*named after an OpenI image id"):
        load_openi(xml_dir, metadata_path=metadata_path, image_dir=xml_dir)
    with pytest.raises(FileNotFoundError, match="image_dir .* is not a folder"):
        load_openi(xml_dir, metadata_path=metadata_path, image_dir=xml_dir / "nope")


def test_load_openi_errors(openi_files, tmp_path, monkeypatch):
    xml_dir, metadata_path, _, _ = openi_files
    with pytest.raises(ValueError, match=r"targets must be 'all' or name\(s\).*Got 'pneumonia'"):
        load_openi(xml_dir, metadata_path=metadata_path, targets="pneumonia")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_openi(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No XML report found"):
        load_openi(tmp_path / "empty", metadata_path=metadata_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "1.xml").write_text("<eCitation><uId id='CXR1'>")
    with pytest.raises(ValueError, match="Cannot parse OpenI report"):
        load_openi(bad, metadata_path=metadata_path)
    csv = tmp_path / "meta.csv"
    pd.DataFrame({"imageid": ["x"], "Study Date": ["20110101"]}).to_csv(csv, index=False)
    with pytest.raises(ValueError, match="lacks the columns \\[\"Patient's Birth Date\"\\]"):
        load_openi(xml_dir, metadata_path=csv)

    monkeypatch.setattr(_openi, "_packaged_data_dir", lambda: None)
    with pytest.raises(MissingExtraError, match=r'pip install "medmix_sklearn\[openi\]"'):
        load_openi()


def test_load_openi_without_metadata_logs_and_leaves_age_nan(openi_files, monkeypatch, caplog):
    xml_dir, _, _, _ = openi_files
    monkeypatch.setattr(_openi, "_packaged_data_dir", lambda: None)
    with caplog.at_level(logging.WARNING, logger="medmix_sklearn.datasets._openi"):
        X, _ = load_openi(xml_dir, return_X_y=True)
    assert X["age"].isna().all()
    assert "age is NaN" in caplog.text
    # Without views the first listed image is the primary one.
    assert X["image_id"].tolist()[1] == "CXR2_IM-0652-2001"


def test_load_openi_reads_packaged_files_without_importing_the_package(
    openi_files, tmp_path, monkeypatch
):
    """A fake torchxrayvision whose import fails: only its data/ folder may be read."""
    _, metadata_path, _, archive = openi_files
    package = tmp_path / "site" / "torchxrayvision"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (package / "data" / "NLMCXR_reports.tgz").write_bytes(archive.read_bytes())
    (package / "data" / "nlmcxr_dicom_metadata.csv.gz").write_bytes(metadata_path.read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "torchxrayvision", raising=False)

    bunch = load_openi()
    assert "torchxrayvision" not in sys.modules
    assert bunch.data["study_id"].tolist() == ["CXR1", "CXR2", "CXR3", "CXR10"]
    np.testing.assert_array_equal(bunch.data["age"], [55.0, 46.0, 70.0, np.nan])
    assert "CC BY-NC-ND" in bunch.DESCR


@pytest.mark.skipif(
    _openi._packaged_data_dir() is None, reason="torchxrayvision's OpenI data is not installed"
)
def test_load_openi_packaged_data():
    bunch = load_openi(targets="all")
    X, y = bunch.data, bunch.target
    assert "torchxrayvision" not in sys.modules
    assert 3800 <= len(X) <= 3955
    assert X["study_id"].is_unique
    assert X["age"].notna().mean() > 0.9
    assert X["age"].between(0, 120).sum() == X["age"].notna().sum()
    assert X["impression"].notna().mean() > 0.95
    assert not X["indication"].dropna().str.fullmatch(r"[X\W]*").any()
    assert 0.5 < y["abnormal"].mean() < 0.75
    assert (y.drop(columns="abnormal").mean() > 0.01).all()
