"""The medmix command: help, fit/predict round trip, cv/tune/embed, demo, bad input."""

import json
import os
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest

from medmix_sklearn._provenance import load_model
from medmix_sklearn.cli import main
from medmix_sklearn.datasets import make_multimodal_classification

SUBCOMMANDS = ["demo", "fit", "predict", "cv", "tune", "embed", "cache", "info"]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """A small CSV with relative image paths, and its folder."""
    folder = tmp_path_factory.mktemp("cli")
    X, y = make_multimodal_classification(
        32, image_dir=folder / "images", image_size=32, missing_rate=0.2, random_state=0
    )
    X["image_path"] = [None if p is None else os.path.relpath(p, folder) for p in X["image_path"]]
    X["label"] = np.where(y.to_numpy() == 1, "sick", "well")
    path = folder / "patients.csv"
    X.to_csv(path, index=False)
    return path, folder


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cli_cache"))


def _modality_args(tiny_text_model_dir, cache):
    return [
        "--image", "xray=image_path:test_efficientnet", "--no-pretrained",
        "--text", f"report:{tiny_text_model_dir}",
        "--tabular", "labs=wbc,crp,heart_rate", "--tabular", "demo=age,sex",
        "--cache-dir", cache, "-q",
    ]


@pytest.fixture(scope="module")
def model_file(table, cache, tiny_text_model_dir):
    path, folder = table
    out = folder / "model.medmix"
    code = main(["fit", "--data", str(path), "--target", "label", "--max-epochs", "2",
                 *_modality_args(tiny_text_model_dir, cache), "--out", str(out)])
    assert code == 0
    return out


def _fail(capsys, argv, code):
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("command", [None, *SUBCOMMANDS])
def test_every_subcommand_has_help(command, capsys):
    argv = ([command] if command else []) + ["--help"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: medmix {command or ''}".rstrip())
    if command in ("fit", "cv", "tune", "embed"):
        assert "--image [NAME=]COL[:EXPERT,...]" in out and "[[modalities]]" in out


def test_precision_flag_reaches_the_embedder(capsys):
    from medmix_sklearn.cli._entries import _embedder
    from medmix_sklearn.cli._main import build_parser

    base = ["fit", "--data", "t.csv", "--target", "y", "--image", "image_path"]
    args = build_parser().parse_args([*base, "--precision", "autocast"])
    embedder = _embedder(args, [("labs", "passthrough", ["a"])], [], {})
    assert embedder.precision == "autocast"
    args = build_parser().parse_args(base)
    assert _embedder(args, [("labs", "passthrough", ["a"])], [], {}).precision == "float32"
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*base, "--precision", "half"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'half'" in capsys.readouterr().err


def test_python_dash_m_runs_the_command(monkeypatch, capsys):
    import runpy

    monkeypatch.setattr(sys, "argv", ["medmix_sklearn", "--version"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("medmix_sklearn", run_name="__main__")
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("medmix 0.")


def test_fit_records_experts_and_predict_round_trips(table, model_file, tmp_path, capsys):
    path, folder = table
    model, provenance = load_model(model_file, return_provenance=True)
    experts = [(e["modality"], e["model"]) for e in provenance["experts"]]
    assert experts[0] == ("xray", "test_efficientnet")
    assert experts[1][0] == "report"
    assert provenance["training_data"]["n_samples"] == 32
    assert "label" not in provenance["training_data"]["columns"]
    assert provenance["metadata"]["target"] == "label"

    out = tmp_path / "pred.csv"
    assert main(["predict", "--model", str(model_file), "--data", str(path),
                 "--out", str(out), "-q"]) == 0
    pred = pd.read_csv(out)
    assert list(pred.columns) == ["row", "prediction", "proba_sick", "proba_well"]
    assert len(pred) == 32
    np.testing.assert_allclose(pred[["proba_sick", "proba_well"]].sum(axis=1), 1.0, atol=1e-5)
    best = np.where(pred["proba_sick"] > pred["proba_well"], "sick", "well")
    assert (pred["prediction"] == best).all()

    # Parquet input gives the same predictions; without --out they go to stdout.
    parquet = folder / "patients.parquet"
    pd.read_csv(path).to_parquet(parquet)
    capsys.readouterr()
    assert main(["predict", "--model", str(model_file), "--data", str(parquet), "-q"]) == 0
    from io import StringIO

    again = pd.read_csv(StringIO(capsys.readouterr().out))
    np.testing.assert_allclose(again["proba_sick"], pred["proba_sick"], atol=1e-6)


def test_info_prints_provenance(model_file, capsys):
    assert main(["info", str(model_file)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["library"] == "medmix_sklearn"
    assert info["experts"][0]["fingerprint"]
    assert info["block_layout"]["n_features_out"] > 256


def test_config_file(table, cache, tmp_path):
    path, _ = table
    config = tmp_path / "medmix.toml"
    config.write_text(
        'target = "label"\n'
        "[[modalities]]\nname = \"xray\"\nimage = \"image_path\"\n"
        "experts = [{ model = \"test_efficientnet\", pretrained = false, name = \"tiny\" }]\n"
        "[[modalities]]\nname = \"labs\"\ntabular = [\"wbc\", \"crp\", \"sex\"]\n"
        "[classifier]\nmax_epochs = 1\nhidden_dim = 16\n"
        f"[embedder]\ncache_dir = \"{cache}\"\n"
    )
    out = tmp_path / "m.medmix"
    assert main(["fit", "--data", str(path), "--config", str(config), "-q",
                 "--out", str(out)]) == 0
    model, provenance = load_model(out, return_provenance=True)
    assert model.named_steps["clf"].hidden_dim == 16
    blocks = {(b["modality"], b["expert"]) for b in provenance["block_layout"]["blocks"]}
    assert blocks == {("xray", "tiny"), ("labs", "tabular")}
    names = provenance["block_layout"]["feature_names_out"]
    assert {"labs__sex_F", "labs__sex_M", "labs__wbc"} <= set(names)  # sex one-hot encoded


def test_cv_tune_and_embed(table, cache, tiny_text_model_dir, tmp_path, capsys):
    path, _ = table
    args = _modality_args(tiny_text_model_dir, cache)
    report, oof = tmp_path / "cv.html", tmp_path / "oof.csv"
    assert main(["cv", "--data", str(path), "--target", "label", "--folds", "2",
                 "--max-epochs", "2", "--baselines", "--report", str(report),
                 "--out", str(oof), *args]) == 0
    printed = capsys.readouterr().out
    assert "MedMIX" in printed and "HistGradientBoosting" in printed
    html_text = report.read_text()
    for anchor in ("roc", "robustness", "patterns", "weights", "model-card"):
        assert f'id="{anchor}"' in html_text
    assert len(pd.read_csv(oof)) == 32

    best = tmp_path / "best.json"
    assert main(["tune", "--data", str(path), "--target", "label", "--trials", "1",
                 "--folds", "2", "--max-epochs", "1", "--out", str(best), *args]) == 0
    result = json.loads(best.read_text())
    assert result["n_trials"] == 1 and "lr" in result["best_params"]

    matrix = tmp_path / "emb.parquet"
    assert main(["embed", "--data", str(path), "--out", str(matrix), *args]) == 0
    embedded = pd.read_parquet(matrix)
    assert embedded.shape[0] == 32
    assert "xray__test_efficientnet__255" in embedded.columns
    assert cache in capsys.readouterr().out


def test_embed_on_a_scheduler_then_cache_info_and_prune(
    table, model_file, tiny_text_model_dir, tmp_path, capsys
):
    distributed = pytest.importorskip("distributed")
    path, _ = table
    cache = str(tmp_path / "sched_cache")
    args = _modality_args(tiny_text_model_dir, cache)
    with distributed.LocalCluster(
        n_workers=1, processes=False, dashboard_address=None
    ) as cluster:
        assert main(["embed", "--data", str(path), "--scheduler", cluster.scheduler_address,
                     "--partitions", "2", *args]) == 0
    printed = capsys.readouterr().out
    assert "items embedded on 1 worker(s), 0 already cached, 0 unreadable" in printed

    assert main(["cache", "info", "--cache-dir", cache, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert len(info["experts"]) == 2 and all(e["entries"] > 0 for e in info["experts"])
    assert main(["cache", "info", "--cache-dir", cache]) == 0
    assert "entries" in capsys.readouterr().out
    # The saved model was fitted with the same experts: nothing to prune.
    assert main(["cache", "prune", "--cache-dir", cache, "--keep-model", str(model_file),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["experts_removed"] == []
    keep = info["experts"][0]["fingerprint"]
    assert main(["cache", "prune", "--cache-dir", cache, "--keep", keep]) == 0
    assert "1 expert folder(s)" in capsys.readouterr().out
    _fail(capsys, ["embed", "--data", str(path), "--scheduler", "tcp://127.0.0.1:1",
                   "--resources", "GPU", *args], 2)


def test_demo_tiny(tmp_path, tiny_text_model_dir, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--tiny", "--text-expert", tiny_text_model_dir, "--n-samples", "40",
                 "--out", str(out), "--cache-dir", "none", "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "demo_images", "medmix_demo_model.medmix", "medmix_report.html"
    ]
    text = (out / "medmix_report.html").read_text()
    assert "Optuna trials" in text and "HistGradientBoosting (NaN blocks)" in text
    model = load_model(out / "medmix_demo_model.medmix")
    assert list(model.classes_) == [0, 1]
    assert "report:" in capsys.readouterr().out


def test_bad_target_lists_columns(table, capsys):
    path, _ = table
    line = _fail(capsys, ["fit", "--data", str(path), "--target", "nope", "--tabular", "wbc"], 2)
    assert line.startswith("medmix fit: error: --target: column 'nope' is not in the table.")
    assert "Available columns: 'image_path', 'report'" in line


def test_bad_inputs_name_the_fault(table, model_file, tmp_path, capsys):
    path, folder = table
    frame = pd.read_csv(path)

    line = _fail(capsys, ["fit", "--data", str(path), "--target", "label", "--image", "scan"], 2)
    assert "--image: column 'scan' is not in the table" in line

    holes = frame.copy()
    holes.loc[[3, 7], "label"] = np.nan
    holes.to_csv(tmp_path / "holes.csv", index=False)
    line = _fail(capsys, ["fit", "--data", str(tmp_path / "holes.csv"), "--target", "label",
                          "--tabular", "wbc"], 2)
    assert "column 'label' is empty in rows 3, 7" in line

    line = _fail(capsys, ["fit", "--data", str(tmp_path / "x.xlsx"), "--target", "y"], 2)
    assert "no such file" in line
    (tmp_path / "x.xlsx").write_text("a")
    line = _fail(capsys, ["fit", "--data", str(tmp_path / "x.xlsx"), "--target", "y"], 2)
    assert "unknown table format '.xlsx'" in line

    line = _fail(capsys, ["fit", "--data", str(path), "--target", "label"], 2)
    assert "no modality given" in line

    line = _fail(capsys, ["fit", "--data", str(path), "--target", "label", "--image",
                          "image_path:efficientnet_lite9", "--cache-dir", "none", "-q"], 1)
    assert "efficientnet_lite9" in line

    frame.drop(columns=["report"]).to_csv(tmp_path / "noreport.csv", index=False)
    line = _fail(capsys, ["predict", "--model", str(model_file), "--data",
                          str(tmp_path / "noreport.csv")], 2)
    assert "the model needs columns ['report']" in line

    (tmp_path / "junk.joblib").write_bytes(b"junk")
    line = _fail(capsys, ["predict", "--model", str(tmp_path / "junk.joblib"), "--data",
                          str(path)], 1)
    assert "is not a medmix model file" in line

    bad = tmp_path / "bad.toml"
    bad.write_text("[[modalities]]\nname = 'x'\n")
    line = _fail(capsys, ["fit", "--data", str(path), "--target", "label", "--config", str(bad)], 2)
    assert "give exactly one of `image`, `text` or `tabular`" in line


def test_write_table_leaves_no_temporary_file(tmp_path):
    from medmix_sklearn.cli._entries import write_table

    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    write_table(frame, str(tmp_path / "out" / "t.csv"))
    write_table(frame, str(tmp_path / "out" / "t.parquet"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["t.csv", "t.parquet"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "out" / "t.csv"), frame)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out" / "t.parquet"), frame)


def test_config_expert_given_as_one_string_is_one_expert():
    from medmix_sklearn.cli._entries import _config_entries

    frame = pd.DataFrame({"image_path": ["a.png"]})
    config = {"modalities": [{"image": "image_path", "experts": "test_efficientnet"}]}
    ((name, experts, column),), images = _config_entries(config, "modalities", frame, False, set())
    assert [e.model for e in experts] == ["test_efficientnet"]
    assert (name, column, images) == ("image_path", "image_path", ["image_path"])


def test_numeric_column_with_stray_text_is_refused_or_coerced(tmp_path, capsys):
    import warnings

    from medmix_sklearn.exceptions import NumericCoercionWarning

    rng = np.random.default_rng(0)
    n = 60
    frame = pd.DataFrame({
        "wbc": rng.normal(8, 2, n).round(1).astype(str),
        "sex": rng.choice(["f", "m"], n),
        "label": rng.integers(0, 2, n),
    })
    frame.loc[4, "wbc"], frame.loc[9, "wbc"] = "12,5", ">100"
    dirty = tmp_path / "dirty.csv"
    frame.to_csv(dirty, index=False)
    base = ["fit", "--data", str(dirty), "--target", "label", "--tabular", "labs=wbc,sex",
            "--max-epochs", "2", "--cache-dir", "none", "-q"]
    out = tmp_path / "m.medmix"
    line = _fail(capsys, [*base, "--out", str(out)], 2)
    assert "column 'wbc'" in line and "row 4: '12,5'" in line and "row 9: '>100'" in line
    assert "--coerce-numeric" in line and not out.exists()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([*base, "--coerce-numeric", "--out", str(out)]) == 0
    coerced = [w for w in caught if issubclass(w.category, NumericCoercionWarning)]
    assert len(coerced) == 1 and "2 cells" in str(coerced[0].message)
    assert zipfile.is_zipfile(out)  # the safe model file format, not a pickle
    model = load_model(out)
    embedder = model.named_steps["embed"]
    # wbc is one numeric column; only sex is one-hot encoded.
    names = [n for n in embedder.get_feature_names_out() if n.startswith("labs__")]
    assert sorted(names) == ["labs__sex_f", "labs__sex_m", "labs__wbc"]

    clean = frame.copy()
    clean.loc[[4, 9], "wbc"] = "9.0"
    clean.drop(columns="label").to_csv(tmp_path / "clean.csv", index=False)
    assert main(["predict", "--model", str(out), "--data", str(tmp_path / "clean.csv"),
                 "--out", str(tmp_path / "p.csv"), "-q"]) == 0
    assert len(pd.read_csv(tmp_path / "p.csv")) == n
    line = _fail(capsys, ["predict", "--model", str(out), "--data", str(dirty)], 2)
    assert "column 'wbc'" in line and "row 4: '12,5'" in line
