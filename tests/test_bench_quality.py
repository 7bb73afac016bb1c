"""Smoke tests of the quality benchmark's scikit-learn baselines (benchmarks/_baselines.py)."""

import os
import sys

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

from _baselines import (
    BestSingleModality,
    BlockImputer,
    LateFusionClassifier,
    make_hgb,
    make_logistic,
    make_mlp,
    modality_columns,
    quiet_fit,
)


def _block_frame(n=120, n_classes=2, seed=0):
    """Two expert blocks (a: 4 columns, b: 3 columns) and a tabular modality with NaN cells."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    a = rng.normal(size=(n, 4)) + y[:, None]
    b = rng.normal(size=(n, 3)) - 0.5 * y[:, None]
    labs = rng.normal(size=(n, 2)) + 0.3 * y[:, None]
    a[rng.random(n) < 0.3] = np.nan
    b[rng.random(n) < 0.3] = np.nan
    labs[rng.random(n) < 0.2] = np.nan  # the whole modality absent
    labs[rng.random(n) < 0.1, 1] = np.nan  # single cells of column "crp"
    names = (
        [f"img__e1__{k}" for k in range(4)]
        + [f"txt__e2__{k}" for k in range(3)]
        + ["labs__wbc", "labs__crp"]
    )
    return pd.DataFrame(np.hstack([a, b, labs]), columns=names), y


BASELINES = {
    "logistic": lambda: make_logistic(),
    "hgb": lambda: make_hgb(max_iter=20, random_state=0),
    "late_fusion": lambda: LateFusionClassifier(),
    "mlp": lambda: make_mlp(max_iter=50, random_state=0),
    "best_single": lambda: BestSingleModality(random_state=0),
}


@pytest.mark.parametrize("name", list(BASELINES))
@pytest.mark.parametrize("n_classes", [2, 3])
def test_baseline_probabilities(name, n_classes):
    X, y = _block_frame(n_classes=n_classes)
    model = quiet_fit(BASELINES[name](), X, y)
    proba = model.predict_proba(X)
    assert proba.shape == (len(X), n_classes)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert np.isfinite(proba).all()
    # A row with every modality absent still gets a prediction.
    empty = pd.DataFrame(np.full((2, X.shape[1]), np.nan), columns=X.columns)
    proba_empty = model.predict_proba(empty)
    np.testing.assert_allclose(proba_empty.sum(axis=1), 1.0, rtol=1e-6)


def test_modality_columns_groups_experts_and_skips_teachers():
    names = ["a__x__0", "a__x__1", "a__y__0", "labs__wbc", "teacher__a__z__0"]
    groups = modality_columns(names)
    assert list(groups) == ["a", "labs"]
    np.testing.assert_array_equal(groups["a"], [0, 1, 2])
    np.testing.assert_array_equal(groups["labs"], [3])


def test_block_imputer_indicator_count_and_values():
    X, _ = _block_frame()
    imputer = BlockImputer().fit(X)
    # One indicator per modality (img, txt, labs) + one for the cell-NaN column labs__crp.
    assert imputer.n_indicators_ == 4
    np.testing.assert_array_equal(imputer.cell_indicator_columns_, [8])
    Xt = imputer.transform(X)
    assert Xt.shape == (len(X), X.shape[1] + 4)
    assert not np.isnan(Xt).any()
    values = X.to_numpy()
    np.testing.assert_array_equal(Xt[:, 9], np.isnan(values[:, :4]).all(axis=1))
    cell_only = ~np.isnan(values[:, 7]) & np.isnan(values[:, 8])
    assert cell_only.any()
    assert (Xt[cell_only, 12] == 1).all() and (Xt[cell_only, 11] == 0).all()
    # Imputed cells hold the training mean of the column.
    rows = np.isnan(values[:, 0])
    np.testing.assert_allclose(Xt[rows, 0], np.nanmean(values[:, 0]))


def test_late_fusion_uses_only_present_modalities():
    X, y = _block_frame()
    model = LateFusionClassifier().fit(X, y)
    groups = model.modalities_
    i = int(np.flatnonzero(X.iloc[:, groups["txt"]].notna().all(axis=1))[0])
    row = X.iloc[[i]].copy()
    row.iloc[:, :] = np.nan
    row.iloc[0, groups["txt"]] = X.iloc[i, groups["txt"]].to_numpy()
    expected = model.estimators_["txt"].predict_proba(X.iloc[[i], groups["txt"]].to_numpy())
    assert not np.allclose(expected, 0.5)
    np.testing.assert_allclose(model.predict_proba(row), expected)

    # Two present modalities: the mean of their two models' probabilities.
    row.iloc[0, groups["img"]] = np.abs(X.iloc[:, groups["img"]].dropna().iloc[0].to_numpy())
    p_img = model.estimators_["img"].predict_proba(row.iloc[:, groups["img"]].to_numpy())
    np.testing.assert_allclose(model.predict_proba(row), (expected + p_img) / 2)

    # No modality present: the training prior.
    empty = pd.DataFrame(np.full((1, X.shape[1]), np.nan), columns=X.columns)
    np.testing.assert_allclose(model.predict_proba(empty)[0], np.bincount(y) / len(y))


def test_best_single_modality_picks_the_informative_modality():
    rng = np.random.default_rng(1)
    n = 150
    y = np.arange(n) % 2
    informative = rng.normal(size=(n, 3)) + 2.0 * y[:, None]
    noise = rng.normal(size=(n, 3))
    X = pd.DataFrame(
        np.hstack([noise, informative]),
        columns=[f"noise__e__{k}" for k in range(3)] + [f"signal__e__{k}" for k in range(3)],
    )
    model = BestSingleModality(random_state=0).fit(X, y)
    assert model.modality_ == "signal"
    assert model.cv_scores_["signal"] > model.cv_scores_["noise"]
    # Only the chosen modality's columns matter at prediction time.
    scrambled = X.copy()
    scrambled.iloc[:, :3] = rng.normal(size=(n, 3))
    np.testing.assert_allclose(model.predict_proba(scrambled), model.predict_proba(X))


# -- the quality benchmark's results store (benchmarks/bench_quality.py) -------------------


def _entry(dataset, method, seed, fp, auroc):
    rows = [("mcar", p, 0, f, metric, auroc if metric == "auroc" else 0.1)
            for p in (0.0, 0.25, 0.5, 0.75) for f in range(3) for metric in ("auroc", "ece")]
    rows += [("mnar",) + r[1:] for r in rows]
    frame = pd.DataFrame(rows, columns=["mechanism", "p", "repeat", "fold", "metric", "score"])
    frame.loc[frame.metric == "auroc", "score"] += 0.01 * frame.loc[frame.metric == "auroc", "fold"]
    return {"dataset": dataset, "method": method, "seed": seed, "label": method, "params": {}, "fingerprint": fp,
            "commit": "abc", "date": "now", "seconds": 3.0, "scores": frame.to_dict(orient="list")}


def test_run_store_merges_writers_and_skips_stale_entries(tmp_path):
    import bench_quality as bq

    store = bq.RunStore(str(tmp_path / bq.STORE_NAME))
    fp = {"n_rows": 10, "n_features": 4, "n_folds": 3, "p_grid": list(bq.P_GRID), "mechanisms": list(bq.MECHANISMS)}
    store.update(lambda d: d["datasets"].__setitem__("toy", {"title": "Toy", "info": {}, "fingerprint": fp}))
    # Two writers (e.g. the baselines' process and MedMIX's) each add their own entry.
    store.update(lambda d: d["runs"].__setitem__(bq.run_key("toy", "hgb", 0), _entry("toy", "hgb", 0, fp, 0.7)))
    store.update(lambda d: d["runs"].__setitem__(bq.run_key("toy", "medmix", 0),
                                                 _entry("toy", "medmix", 0, fp, 0.8)))
    stale = {**fp, "n_folds": 5}
    store.update(lambda d: d["runs"].__setitem__(bq.run_key("toy", "late_fusion", 0),
                                                 _entry("toy", "late_fusion", 0, stale, 0.9)))
    doc = store.load()
    assert set(doc["runs"]) == {"toy|hgb|0", "toy|medmix|0", "toy|late_fusion|0"}
    results = bq.collect(doc)
    methods = results["toy"]["methods"]
    assert list(methods) == ["hgb", "medmix"]  # the stale entry (other fold count) is left out
    cell = methods["hgb"]["curves"]["mcar|auroc|0.0"]
    assert cell["mean"] == pytest.approx(0.71) and cell["std"] == pytest.approx(np.std([0.7, 0.71, 0.72]))
    assert methods["hgb"]["curves"]["mcar|auroc|0.0"]["medmix_minus_this"]["mean"] == pytest.approx(0.1)
    assert methods["medmix"]["seconds_per_fold"] == pytest.approx(1.0)


def test_method_selection_by_name_pattern_and_group():
    import bench_quality as bq

    assert bq.selected("hgb", None)
    assert bq.selected("hgb", ["sklearn"]) and not bq.selected("fusemoe", ["sklearn"])
    assert bq.selected("fusemoe", ["published"]) and bq.selected("fusemoe", ["baselines"])
    assert bq.selected("medmix_absent_pattern", ["medmix*"]) and not bq.selected("hgb", ["medmix*"])
    assert bq.selected("medmix", ["medmix"]) and not bq.selected("medmix_pattern_prior", ["medmix"])


def _toy_store(tmp_path, name, title, runs):
    """A results store in ``tmp_path`` with one data set and the entries ``(method, seed, auroc)``."""
    import bench_quality as bq

    store = bq.RunStore(str(tmp_path / bq.STORE_NAME))
    fp = {"n_rows": 10, "n_features": 4, "n_folds": 3, "p_grid": list(bq.P_GRID), "mechanisms": list(bq.MECHANISMS)}
    info = {"n_samples": 10, "n_features": 4, "class_counts": [5, 5], "presence_rate": {"a": 1.0}}

    def fill(d):
        d["datasets"][name] = {"title": title, "info": info, "fingerprint": fp}
        for method, seed, auroc in runs:
            d["runs"][bq.run_key(name, method, seed)] = _entry(name, method, seed, fp, auroc)

    store.update(fill)
    return store


def test_report_only_rewrites_the_page_from_the_store(tmp_path):
    import bench_quality as bq

    _toy_store(tmp_path, "gen_label", "Toy by label", [("hgb", 0, 0.75), ("late_fusion", 0, 0.6), ("medmix", 0, 0.74)])
    doc = bq.main(["--report-only", "--out", str(tmp_path)])
    page = (tmp_path / "quality.md").read_text()
    assert "--report-only" in page and "Toy by label" in page
    # MedMIX 0.74 vs HGB 0.75 +- 0.008: below the mean, level within one std nowhere.
    assert "MedMIX at or above HistGradientBoosting" in page and "**NOT MET**" in page
    assert doc["verdict"]["gen_label"]["incomplete"]  # the other baselines are not in the store
    assert (tmp_path / "robustness_gen_label.png").exists()
    # p=0 is one cell (plain cross-validation), not one per mechanism.
    cells = len(bq.P_GRID) * len(bq.MECHANISMS) - (len(bq.MECHANISMS) - 1)
    assert len(doc["verdict"]["gen_label"]["vs_hgb"]) == cells
    assert doc["verdict"]["gen_label"]["ece_cells"] == cells
    assert not any(key.startswith("mnar|0.0") for key in doc["verdict"]["gen_label"]["vs_hgb"])


def test_every_candidate_counts_the_cells_each_method_would_fail(tmp_path):
    """The AUROC target with each method in MedMIX's place, and a method run with fewer seeds marked."""
    import bench_quality as bq

    runs = [(method, seed, auroc) for method, auroc in [("hgb", 0.70), ("late_fusion", 0.60), ("medmix", 0.80)]
            for seed in (0, 1)]
    # A variant below MedMIX's defaults, run on seed 0 only.
    _toy_store(tmp_path, "toy", "Toy", [*runs, ("medmix_variant", 0, 0.75)])
    doc = bq.main(["--report-only", "--out", str(tmp_path), "--only", "toy"])
    table = doc["every_candidate"]["toy"]
    cells = len(bq._verdict_cells())
    assert table["cells"] == cells
    # MedMIX (0.80-0.82 over folds) is above everyone: it fails no cell.
    assert table["not_level"]["medmix"] == {}
    # HGB (mean 0.71) is below MedMIX's 0.81 - 0.008 in every cell, and only MedMIX is above it.
    assert len(table["not_level"]["hgb"]) == cells
    assert all(above == ["medmix"] for above in table["not_level"]["hgb"].values())
    # Late fusion is below both HGB and MedMIX everywhere.
    assert all(sorted(above) == ["hgb", "medmix"] for above in table["not_level"]["late_fusion"].values())
    assert len(table["not_level"]["medmix_variant"]) == cells  # 0.76 < 0.81 - 0.008
    page = (tmp_path / "quality.md").read_text()
    assert "### Could any method meet the AUROC target?" in page
    assert "- Toy: met by `medmix`." in page
    assert "| medmix_variant, seed 0 only |" in page and "| hgb |" in page
    # A data set where every method fails some cell: none meets the target.
    doc = {"every_candidate": {"t": {"cells": 7, "not_level": {"a": {"mcar|0.0": ["b"]},
                                                                "b": {"mcar|0.0": ["a"], "mnar|0.5": ["a"]}}}},
           "results": {"t": {"title": "T", "methods": {"a": {"label": "A"}, "b": {"label": "B"}}}}}
    lines = bq._candidate_section(doc)
    assert "| A | 1/7 |" in lines and "| B | 2/7 |" in lines
    assert "- T: met by **no method**; the fewest cells not level, 1, for `a`." in lines


def test_bench_mnar_train_scores_both_modes_on_the_same_folds():
    """benchmarks/bench_mnar_train.py: test-only and train-and-test amputation, and its page."""
    import bench_mnar_train
    import bench_quality
    from sklearn.model_selection import StratifiedKFold

    X, y = _block_frame(150)
    data = bench_quality.Dataset("toy", "Toy data", X.to_numpy(np.float32), np.array(X.columns), y)
    method = bench_quality.Method("logreg_impute", "logreg_impute", label="LogReg")
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(data.X, y))
    run = bench_mnar_train.evaluate(data, method, 0, folds)
    frame = pd.DataFrame(run["rows"])
    assert set(frame["mode"]) == {"test", "train_and_test"} and set(frame["p"]) == set(bench_mnar_train.P_GRID)
    auroc = frame[frame.metric == "auroc"].pivot_table(index=["p", "fold"], columns="mode", values="score")
    np.testing.assert_array_equal(auroc.loc[0.0, "test"], auroc.loc[0.0, "train_and_test"])
    # Learnt from the training folds, label-dependent blanking lifts the indicator model.
    assert auroc.loc[0.5, "train_and_test"].mean() > auroc.loc[0.5, "test"].mean()
    assert (frame[frame.metric == "ece"]["score"] >= 0).all()
    doc = {"runs": {"toy": {"data_set": "toy", "title": "Toy data",
                            "methods": {"logreg_impute": run, "medmix": {**run, "label": "MedMIX"}}}}}
    page = bench_mnar_train.report(doc, "CMD")
    assert "`CMD`" in page and "| **MedMIX** | train and test |" in page
    assert "  - MedMIX: level with or above every baseline at every p." in page
