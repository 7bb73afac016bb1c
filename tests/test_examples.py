"""Every script in examples/ runs, with tiny settings, and gives sensible results."""

import importlib.util
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str):
    """Import ``examples/{name}.py`` by path (examples/ is not a package)."""
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"medmix_example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        # Optuna marks OptunaSearchCV experimental; not what these tests check.
        warnings.filterwarnings("ignore", module="optuna.*")
        warnings.filterwarnings("ignore", message=".*OptunaSearchCV is experimental.*")
        yield


def test_every_example_has_a_docstring_and_a_tiny_main():
    scripts = sorted(p.stem for p in EXAMPLES.glob("*.py"))
    assert scripts == [
        "custom_expert",
        "optuna_search",
        "pipeline_cross_val",
        "precomputed_embeddings",
        "teacher_distillation",
    ]
    for name in scripts:
        text = (EXAMPLES / f"{name}.py").read_text()
        assert text.startswith('"""'), f"{name}.py has no docstring header"
        # The gallery takes the title from the docstring's first line, underlined.
        title, underline = text[3:].lstrip("\n").splitlines()[:2]
        assert title and underline == "=" * len(title), f"{name}.py: the docstring needs a title"
        assert "--tiny" in text and re.search(r"def main\(\s*tiny", text), name


def test_pipeline_cross_val(tmp_path, tiny_text_model_dir):
    result = load_example("pipeline_cross_val").main(
        tiny=True, text_model=tiny_text_model_dir, workdir=str(tmp_path)
    )
    scores = result["scores"]
    assert scores.shape == (3,)
    assert np.isfinite(scores).all()  # every fold held both classes and was scored
    assert scores.mean() > 0.5  # seeded: the labs carry signal
    names = list(result["feature_names"])
    # 256 image columns, 32 text columns, 5 labs, age and one sex column.
    assert names[0] == "xray__test_efficientnet__0"
    assert sum(n.startswith("report__") for n in names) == 32
    assert names[-7:] == [
        "labs__wbc", "labs__crp", "labs__heart_rate", "labs__temperature", "labs__spo2",
        "demographics__age", "demographics__sex_M",
    ]
    weights = result["weights"]
    modality = weights.filter(like="modality_weight__")
    assert list(modality.columns) == [
        "modality_weight__xray", "modality_weight__report",
        "modality_weight__labs", "modality_weight__demographics",
    ]
    # Demographics are always present, so every row has something to weigh.
    np.testing.assert_allclose(modality.sum(axis=1), 1.0, atol=1e-5)
    # The embedding cache was used: entries exist for the image expert.
    assert any((tmp_path / "cache").rglob("*.seg"))


@pytest.mark.parametrize("route", ["matrix", "pipeline"])
def test_optuna_search(tmp_path, route, tiny_text_model_dir):
    module = load_example("optuna_search")
    search = module.main(
        tiny=True, text_model=tiny_text_model_dir, route=route, n_trials=2,
        workdir=str(tmp_path),
    )
    assert len(search.study_.trials) == 2
    assert search.best_score_ == max(t.value for t in search.study_.trials)
    prefix = "clf__" if route == "pipeline" else ""
    assert f"{prefix}modality_fusion" in search.best_params_
    clf = search.best_estimator_.steps[-1][1] if route == "pipeline" else search.best_estimator_
    assert clf.modality_names_ == ["xray", "report", "labs", "age"]
    # The study is in the journal file: a second process (here, a second call)
    # joins it and adds its trials.
    again = module.main(
        tiny=True, text_model=tiny_text_model_dir, route=route, n_trials=1,
        workdir=str(tmp_path),
    )
    assert len(again.study_.trials) == 3
    assert (tmp_path / "medmix_example.journal").is_file()


def test_teacher_distillation(tmp_path):
    result = load_example("teacher_distillation").main(tiny=True, workdir=str(tmp_path))
    assert set(result["scores"]) == {"no teacher", "align", "distill", "align + distill", "auto"}
    for scores in result["scores"].values():
        assert scores.shape == (3,) and np.isfinite(scores).all()
    # The teacher terms change what is learned (same folds and seeds otherwise).
    plain = result["scores"]["no teacher"]
    assert not np.array_equal(result["scores"]["align"], plain)
    assert not np.array_equal(result["scores"]["distill"], plain)
    # transform keeps the width and writes the teacher blocks as NaN.
    assert result["train_columns"] == result["test_columns"]
    assert result["test_teacher_nan"]
    assert result["teacher_blocks"] == ["teacher__xray__test_resnet"]


def test_precomputed_embeddings():
    result = load_example("precomputed_embeddings").main(tiny=True)
    assert result["modalities"] == ["ct", "notes", "labs"]
    assert 0.5 < result["auroc_frame"] <= 1.0
    # The layout from names and the layout from blocks= are the same model.
    assert result["auroc_array"] == pytest.approx(result["auroc_frame"], abs=1e-6)
    proba = result["proba"]
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    weights = result["weights"]
    assert list(weights.columns) == [
        "expert_weight__ct__ct_large", "expert_weight__ct__ct_small",
        "expert_weight__notes__clinical_bert", "expert_weight__labs__tabular",
        "modality_weight__ct", "modality_weight__notes", "modality_weight__labs",
    ]
    # Rows without a CT give its experts exactly zero weight.
    no_ct = weights["modality_weight__ct"] == 0
    assert no_ct.any()
    assert (weights.loc[no_ct, ["expert_weight__ct__ct_large", "expert_weight__ct__ct_small"]] == 0).all(axis=None)


def test_custom_expert(tmp_path):
    result = load_example("custom_expert").main(tiny=True, workdir=str(tmp_path), n_samples=60)
    scores = result["scores"]
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))
    names = list(result["feature_names"])
    report = [n for n in names if n.startswith("report__")]
    assert report == [f"report__tfidf-svd__{k}" for k in range(16)]
    modality = result["weights"].filter(like="modality_weight__")
    assert list(modality.columns) == ["modality_weight__xray", "modality_weight__report", "modality_weight__labs"]
    # A fit that finds every embedding in the cache never builds the text model.
    assert result["text_model_loaded"] is False
    assert result["fingerprints_differ"] is True
