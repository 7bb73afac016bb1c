"""load_mmist_ccrcc on a small generated replica of the MMIST-ccRCC Code folder."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from medmix_sklearn._layout import parse_feature_names
from medmix_sklearn.datasets import load_mmist_ccrcc

DIMS = {"CT Features": 6, "MRI Features": 6, "WSI Features": 10}
COLUMNS = [
    "case_id", "gender", "age_diag", "grade", "cancer_history", "ajcc_path_tumor_pt",
    "ajcc_path_nodes_pn", "ajcc_clin_metastasis_cm", "ajcc_path_metastasis_pm",
    "ajcc_path_tumor_stage", "vital_status_12", "race_Asian", "race_Black or African American",
    "race_Hispanic or Latino", "race_White", "race_other", "VHL_mutation", "PBMR1_mutation",
    "TTN_mutation", "Split",
]


def _save(folder, name, values, shape):
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / f"{name}.npz", values.astype(np.float32).reshape(shape))


def make_replica(root, n=12, seed=0):
    """Files named and shaped as in benchmarks/ccRCC/Code, with random values.

    Returns the folder and ``{(folder, case): [vectors]}`` of what was written.
    """
    rng = np.random.default_rng(seed)
    code = root / "benchmarks" / "ccRCC" / "Code"
    code.mkdir(parents=True)
    cases = [f"C3L-{i:05d}" for i in range(n // 2)] + [f"TCGA-B0-{i:04d}" for i in range(n - n // 2)]
    rows = []
    for i, case in enumerate(cases):
        race = np.zeros(5, dtype=int)
        race[i % 5] = 1
        genomics = [-1, -1, -1] if i % 4 == 0 else list(rng.integers(0, 2, 3))
        rows.append([
            case, i % 2, np.nan if i == 1 else float(rng.integers(1, 9)), int(rng.integers(1, 5)),
            1.0 if i % 3 == 0 else np.nan, -1 if i == 2 else int(rng.integers(1, 12)),
            int(rng.integers(0, 3)), -1, int(rng.integers(0, 3)), int(rng.integers(1, 5)),
            i % 3 != 1, *race, *genomics, "test" if i % 4 == 3 else "train",
        ])
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["vital_status_12"] = table["vital_status_12"].astype(int)
    table.to_csv(code / "clinical+genomic_split.csv", index=False)

    written: dict = {}
    features = code / "Features"
    for i, case in enumerate(cases):
        # CT for every other patient (2 volumes), MRI for the first three, WSI for all.
        plan = {"CT Features": 2 if i % 2 == 0 else 0, "MRI Features": 1 if i < 3 else 0,
                "WSI Features": 1 + i % 2}
        for folder, count in plan.items():
            for k in range(count):
                v = rng.normal(size=DIMS[folder]).astype(np.float32)
                if folder == "WSI Features":
                    name = f"{case}-01Z-00-DX{k + 1}" if case.startswith("TCGA") else f"{case}-2{k}"
                    shape = (1, DIMS[folder])
                else:
                    name, shape = f"{case}-{k + 1}", (1, 1, DIMS[folder], 1)
                _save(features / folder, name, v, shape)
                written.setdefault((folder, case), []).append(v)
    # A slide of a patient not in the table is ignored.
    _save(features / "WSI Features", "TCGA-ZZ-9999-01Z-00-DX1", rng.normal(size=10), (1, 10))
    return code, table, written


@pytest.fixture
def replica(tmp_path):
    return make_replica(tmp_path)


def test_layout_values_and_missingness(replica):
    code, table, written = replica
    bunch = load_mmist_ccrcc(code)
    X = bunch.data
    assert X.shape == (12, 14 + 3 + 6 + 6 + 10)
    assert list(X.index) == table["case_id"].tolist()
    assert list(bunch.modalities) == ["clinical", "genomics", "ct", "mri", "wsi"]
    assert bunch.modalities["ct"] == [f"ct__mmist__{k}" for k in range(6)]
    assert "clinical__race_black" in X.columns and "genomics__pbrm1" in X.columns
    blocks = {(b.modality, b.expert): b.dim for b in parse_feature_names(X.columns)}
    assert blocks == {("clinical", "tabular"): 14, ("genomics", "tabular"): 3,
                      ("ct", "mmist"): 6, ("mri", "mmist"): 6, ("wsi", "mmist"): 10}

    # -1 codes are missing cells; the all-(-1) genomics rows are absent blocks.
    assert np.isnan(X.loc["C3L-00002", "clinical__ajcc_path_tumor_pt"])
    assert X["clinical__ajcc_clin_metastasis_cm"].isna().all()
    assert np.isnan(X.loc["C3L-00001", "clinical__age_diag"])
    genomics = X[bunch.modalities["genomics"]]
    absent = (table[["VHL_mutation", "PBMR1_mutation", "TTN_mutation"]] == -1).all(axis=1).to_numpy()
    assert genomics.isna().all(axis=1).to_numpy().tolist() == absent.tolist()
    assert not genomics[~absent].isna().any(axis=None)
    assert set(np.unique(genomics[~absent])) <= {0.0, 1.0}

    # Image blocks: the mean of the patient's files, or NaN in every column.
    for modality, folder in (("ct", "CT Features"), ("mri", "MRI Features"), ("wsi", "WSI Features")):
        block = X[bunch.modalities[modality]].to_numpy()
        for i, case in enumerate(table["case_id"]):
            vectors = written.get((folder, case))
            if vectors:
                np.testing.assert_allclose(block[i], np.mean(vectors, axis=0), rtol=1e-6)
            else:
                assert np.isnan(block[i]).all()

    assert bunch.target.name == "vital_status_12"
    assert bunch.target.tolist() == table["vital_status_12"].tolist()
    assert bunch.split.tolist() == table["Split"].tolist()
    assert bunch.frame.shape == (12, X.shape[1] + 2)


def test_max_aggregate_return_X_y_and_clone_root(replica, tmp_path):
    code, table, written = replica
    X, y = load_mmist_ccrcc(tmp_path, aggregate="max", return_X_y=True)  # the clone's root
    case = table["case_id"][0]
    np.testing.assert_allclose(
        X.loc[case, [f"ct__mmist__{k}" for k in range(6)]].to_numpy(),
        np.max(written[("CT Features", case)], axis=0), rtol=1e-6,
    )
    assert y.tolist() == table["vital_status_12"].tolist()


def test_fits_medmix(replica):
    from medmix_sklearn import MedMIXClassifier

    bunch = load_mmist_ccrcc(replica[0])
    clf = MedMIXClassifier(max_epochs=2, early_stopping=False, random_state=0).fit(bunch.data, bunch.target)
    assert clf.modality_names_ == ["clinical", "genomics", "ct", "mri", "wsi"]
    assert clf.predict_proba(bunch.data).shape == (12, 2)


@pytest.mark.parametrize("remove, message", [
    ("clinical+genomic_split.csv", "clinical+genomic_split.csv"),
    ("Features/MRI Features", "MRI Features"),
])
def test_incomplete_folder_names_what_is_missing(replica, remove, message):
    import shutil

    code = replica[0]
    target = code / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(FileNotFoundError, match=f"incomplete.*{re.escape(message)}"):
        load_mmist_ccrcc(code)


def test_errors(replica, tmp_path):
    code = replica[0]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mmist_ccrcc(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="clinical\\+genomic_split.csv"):
        load_mmist_ccrcc(tmp_path / "empty")
    with pytest.raises(ValueError, match="aggregate must be one of"):
        load_mmist_ccrcc(code, aggregate="median")

    # A Git LFS pointer in place of a feature file.
    pointer = code / "Features" / "CT Features" / "C3L-00000-1.npz"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 2130\n")
    with pytest.raises(ValueError, match="C3L-00000-1.npz.*LFS pointer"):
        load_mmist_ccrcc(code)


def test_missing_column_and_empty_feature_folder(replica):
    code = replica[0]
    for f in (code / "Features" / "WSI Features").glob("*.npz"):
        f.unlink()
    with pytest.raises(ValueError, match="WSI Features.*no .npz"):
        load_mmist_ccrcc(code)
    table = pd.read_csv(code / "clinical+genomic_split.csv").drop(columns=["TTN_mutation"])
    table.to_csv(code / "clinical+genomic_split.csv", index=False)
    with pytest.raises(ValueError, match="TTN_mutation"):
        load_mmist_ccrcc(code)
