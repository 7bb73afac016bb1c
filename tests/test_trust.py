"""No silent wrong answers: reproducibility in threads, portability across devices,
a layout that cannot be lost, model files that are safe to open, numbers that
are what the user named (DESIGN.md section 9, trust rules)."""

import threading
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.pipeline import Pipeline

from medmix_sklearn import load_model, save_model
from medmix_sklearn.datasets import make_multimodal_classification
from medmix_sklearn.embedding import MultimodalExpertEmbedder
from medmix_sklearn.exceptions import DeviceFallbackWarning
from medmix_sklearn.experts import ImageExpert
from medmix_sklearn.experts._io import load_image
from medmix_sklearn.fusion import MedMIXClassifier

LABS = ["wbc", "crp", "heart_rate", "temperature", "spo2"]
FAST = dict(hidden_dim=16, max_epochs=3, lr=2e-2, random_state=0)


def _blocks(n=80, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    y = (z.sum(axis=1) > 0).astype(int)
    a = z @ rng.normal(size=(2, 4)) + 0.5 * rng.normal(size=(n, 4))
    b = z @ rng.normal(size=(2, 3)) + 0.5 * rng.normal(size=(n, 3))
    b[rng.random(n) < 0.3] = np.nan
    cols = [f"xray__e__{k}" for k in range(4)] + [f"labs__v{k}" for k in range(3)]
    return pd.DataFrame(np.hstack([a, b]), columns=cols), y


# -- reproducibility --------------------------------------------------------------
def test_random_experts_loaded_in_threads_agree(tiny_image_model, tmp_path):
    """A randomly initialised expert draws its weights from its own generator."""
    image = np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8)
    decoded = load_image(image)
    expected = ImageExpert(tiny_image_model, pretrained=False).embed([decoded])
    stop = threading.Event()

    def hammer():  # another thread using torch's process-wide generator
        i = 0
        while not stop.is_set():
            torch.manual_seed(i)
            torch.rand(100)
            i += 1

    results = []

    def load():
        results.append(ImageExpert(tiny_image_model, pretrained=False).embed([decoded]))

    noise = threading.Thread(target=hammer)
    noise.start()
    try:
        loaders = [threading.Thread(target=load) for _ in range(3)]
        for t in loaders:
            t.start()
        for t in loaders:
            t.join()
    finally:
        stop.set()
        noise.join()
    assert len(results) == 3
    for out in results:
        np.testing.assert_array_equal(out, expected)


def test_experts_built_in_threads_leave_the_process_wide_generator_where_it_was(
    tiny_image_model, monkeypatch
):
    from medmix_sklearn.experts import VolumeExpert

    torch.manual_seed(123)
    state = torch.random.get_rng_state().clone()
    loaders = [threading.Thread(target=ImageExpert(tiny_image_model, pretrained=False)._get_model,
                                args=("cpu",)) for _ in range(4)]
    for t in loaders:
        t.start()
    for t in loaders:
        t.join()
    assert torch.equal(torch.random.get_rng_state(), state)
    # Our own 3-D backbone is built on the meta device: it draws nothing, so it needs
    # no save-and-restore of the generator, and the state is still unchanged after it.

    def no_fork(*args, **kwargs):
        raise AssertionError("the 3-D backbone relied on saving and restoring the generator")

    monkeypatch.setattr(torch.random, "fork_rng", no_fork)
    first = VolumeExpert("test_i3resnet", pretrained=False)._get_model("cpu")
    second = VolumeExpert("test_i3resnet", pretrained=False)._get_model("cpu")
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_expert_constructors_do_not_disturb_another_threads_draws(tiny_image_model, monkeypatch):
    # Another thread draws from the process-wide generator while an expert's
    # constructor runs: it gets the numbers it would get alone (a save-and-restore
    # of the generator around the constructor would hand it the same numbers twice).
    import timm

    inside, drew = threading.Event(), threading.Event()
    real_create = timm.create_model

    def create_while_the_other_thread_draws(*args, **kwargs):
        if torch.empty(0).device.type != "meta":  # the real build, not the architecture probe
            inside.set()
            drew.wait()
        return real_create(*args, **kwargs)

    monkeypatch.setattr(timm, "create_model", create_while_the_other_thread_draws)
    loader = threading.Thread(target=ImageExpert(tiny_image_model, pretrained=False)._get_model, args=("cpu",))
    seen = {}

    def other_thread():
        torch.manual_seed(7)
        loader.start()
        inside.wait()
        first = torch.rand(8)
        drew.set()
        loader.join()
        seen["draws"] = torch.cat([first, torch.rand(8)])

    drawer = threading.Thread(target=other_thread)
    drawer.start()
    drawer.join()
    torch.manual_seed(7)
    torch.testing.assert_close(seen["draws"], torch.rand(16), rtol=0, atol=0)


def test_optuna_search_in_threads_is_reproducible():
    optuna = pytest.importorskip("optuna")
    from optuna.distributions import FloatDistribution
    from optuna_integration import OptunaSearchCV

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    X, y = _blocks(n=60)

    def search():
        # Identical trials in pairs: which thread runs which is up to Optuna,
        # but every trial's score must depend only on its parameters.
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
        for lr in (0.02, 0.02, 0.05, 0.05):
            study.enqueue_trial({"lr": lr})
        search = OptunaSearchCV(
            MedMIXClassifier(hidden_dim=8, max_epochs=3, early_stopping=False, random_state=0),
            {"lr": FloatDistribution(1e-3, 1e-1, log=True)},
            cv=2, n_trials=4, n_jobs=2, refit=False, random_state=0, study=study,
        )
        search.fit(X, y)
        scores = {}
        for trial in search.trials_:
            scores.setdefault(trial.params["lr"], []).append(trial.value)
        return search.best_score_, scores

    (best_1, scores_1), (best_2, _) = search(), search()
    assert best_1 == best_2
    assert all(len(set(values)) == 1 for values in scores_1.values()), scores_1


# -- devices ------------------------------------------------------------------------
def test_fingerprint_names_device_class_and_precision(tiny_image_model):
    expert = ImageExpert(tiny_image_model, pretrained=False)
    assert expert.fingerprint() == expert.fingerprint("cpu")
    assert expert.precision("cpu") == "cpu:float32"
    assert expert.precision("cuda:1", "autocast").startswith("cuda:autocast-")
    assert expert.fingerprint("cuda") != expert.fingerprint("cpu")
    assert expert.fingerprint("cuda") == expert.fingerprint("cuda:0")


def test_each_precision_is_its_own_cache_key_on_cuda_only(tiny_image_model):
    expert = ImageExpert(tiny_image_model, pretrained=False)
    assert expert.precision("cuda") == "cuda:float32"
    assert expert.precision("cpu", "autocast") == "cpu:float32"
    assert expert.fingerprint("cpu", "autocast") == expert.fingerprint("cpu")
    autocast = expert.fingerprint("cuda", "autocast")
    assert autocast not in (expert.fingerprint("cuda"), expert.fingerprint("cpu"))
    with pytest.raises(ValueError, match=r"precision must be one of.*'bfloat16'"):
        expert.fingerprint("cuda", "bfloat16")


@pytest.mark.filterwarnings("ignore:CUDA is not available:UserWarning")
def test_embed_runs_at_the_precision_asked(tiny_image_model):
    from medmix_sklearn.experts._base import current_precision

    seen = []

    class Recording(ImageExpert):
        def _embed(self, model, items, *, device, batch_size):
            seen.append((current_precision(), type(self.autocast("cuda")).__name__))
            return super()._embed(model, items, device=device, batch_size=batch_size)

    expert = Recording(tiny_image_model, pretrained=False)
    images = [np.full((32, 32, 3), v, dtype=np.uint8) for v in (0, 128, 255)]
    decoded = [expert.read(image) for image in images]
    full = expert.embed(decoded)
    auto = expert.embed(decoded, precision="autocast")
    # The CPU runs float32 either way; on CUDA, float32 means no autocast.
    np.testing.assert_array_equal(full, auto)
    assert seen[0] == ("float32", "nullcontext")
    assert seen[1] == ("autocast", "autocast") and current_precision() == "float32"
    with pytest.raises(ValueError, match="precision must be one of"):
        expert.embed(decoded, precision="half")


def test_float32_turns_tf32_off_and_restores_it_after_the_last_thread():
    from medmix_sklearn.experts._base import _without_tf32

    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        outer = _without_tf32("cuda", "float32")
        outer.__enter__()
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        inner_done = threading.Event()

        def other_thread():
            with _without_tf32("cuda:0", "float32"):
                assert not torch.backends.cudnn.allow_tf32
            inner_done.set()

        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        assert inner_done.is_set()
        # The other thread left first: TF32 stays off until the outer one leaves.
        assert not torch.backends.cudnn.allow_tf32
        outer.__exit__(None, None, None)
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        with _without_tf32("cuda", "autocast"), _without_tf32("cpu", "float32"):
            assert torch.backends.cudnn.allow_tf32  # autocast, or the CPU: untouched
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_embedder_precision_reaches_experts_and_cache_keys(tiny_image_model, tmp_path):
    from medmix_sklearn.experts._base import current_precision

    seen = []

    class Recording(ImageExpert):
        def _embed(self, model, items, *, device, batch_size):
            seen.append(current_precision())
            return super()._embed(model, items, device=device, batch_size=batch_size)

    X, _ = make_multimodal_classification(
        6, image_dir=tmp_path / "images", image_size=32, missing_rate=0.0, random_state=0
    )
    columns = X[["image_path"]]
    outputs = {}
    for precision in ("float32", "autocast"):
        embedder = MultimodalExpertEmbedder(
            [("xray", [Recording(tiny_image_model, pretrained=False)], "image_path")],
            cache_dir=tmp_path / "cache", device="cpu", precision=precision,
        )
        outputs[precision] = embedder.fit_transform(columns).to_numpy()
    # The CPU's float32 entries serve both: the second pass embeds nothing.
    assert seen == ["float32"]
    np.testing.assert_array_equal(outputs["float32"], outputs["autocast"])
    bad = MultimodalExpertEmbedder(
        [("xray", [ImageExpert(tiny_image_model, pretrained=False)], "image_path")],
        cache_dir=None, device="cpu", precision="fp16",
    )
    with pytest.raises(ValueError, match="'precision' parameter.*'fp16'"):
        bad.fit(columns)


@pytest.fixture(scope="module")
def image_pipeline(tmp_path_factory, tiny_image_model):
    folder = tmp_path_factory.mktemp("trust")
    X, y = make_multimodal_classification(
        40, image_dir=folder / "images", image_size=32, missing_rate=0.2, random_state=0
    )
    embedder = MultimodalExpertEmbedder(
        [("xray", [ImageExpert(tiny_image_model, pretrained=False)], "image_path"),
         ("labs", "passthrough", LABS)],
        cache_dir=folder / "cache", device="cpu",
    )
    pipe = Pipeline([("embed", embedder), ("clf", MedMIXClassifier(**FAST))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        pipe.fit(X.iloc[:30], y[:30])
    return pipe, X, y, folder


@pytest.mark.skipif(torch.cuda.is_available(), reason="simulates a CPU-only machine")
def test_cuda_recorded_pipeline_saved_and_loaded_predicts_new_images_on_cpu(image_pipeline):
    from skorch.exceptions import DeviceWarning

    pipe, X, _, folder = image_pipeline
    new = X.iloc[30:]
    expected = pipe.predict_proba(new)
    # As the previous session would have saved it on a GPU machine.
    pipe.named_steps["embed"].device_ = "cuda"
    clf = pipe.named_steps["clf"]
    clf.device_, clf.net_.device = "cuda", "cuda"
    try:
        path = save_model(pipe, folder / "cuda.model")
    finally:
        pipe.named_steps["embed"].device_ = "cpu"
        clf.device_, clf.net_.device = "cpu", "cpu"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeviceWarning)
        loaded = load_model(path)
    with pytest.warns(DeviceFallbackWarning, match="CUDA is not available") as record:
        proba = loaded.predict_proba(new)
    np.testing.assert_allclose(proba, expected, atol=1e-6)
    assert not any("precision='autocast'" in str(w.message) for w in record)
    # Fitted under autocast, the warning says the predictions can differ and how to avoid it.
    loaded.named_steps["embed"].precision = "autocast"
    with pytest.warns(DeviceFallbackWarning, match=r"precision='autocast'.*precision='float32'"):
        loaded.predict_proba(new)


def test_embedder_saved_before_precision_existed_loads_as_autocast(image_pipeline):
    import pickle

    embedder = image_pipeline[0].named_steps["embed"]
    state = dict(embedder.__getstate__())  # may be the live __dict__ itself
    state.pop("precision")
    old = type(embedder).__new__(type(embedder))
    old.__setstate__(state)
    assert old.precision == "autocast" and embedder.precision == "float32"
    assert pickle.loads(pickle.dumps(embedder)).precision == "float32"


# -- the layout is never lost silently -------------------------------------------
def _wide_blocks(n=60, seed=0):
    """Two expert modalities of 16 columns each and a tabular one: 35 columns."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    y = (z.sum(axis=1) > 0).astype(int)
    cols, mats = [], []
    for m in ("xray", "report"):
        emb = z @ rng.normal(size=(2, 16)) + 0.5 * rng.normal(size=(n, 16))
        emb[rng.random(n) < 0.3] = np.nan
        mats.append(emb)
        cols += [f"{m}__e__{k}" for k in range(16)]
    mats.append(z + rng.normal(size=(n, 2)))
    mats.append(rng.normal(size=(n, 1)))
    cols += ["labs__age", "labs__wbc", "labs__crp"]
    return pd.DataFrame(np.hstack(mats), columns=cols), y


def test_array_from_a_meta_estimator_warns_that_the_layout_is_lost():
    from sklearn.ensemble import BaggingClassifier

    from medmix_sklearn.exceptions import LayoutWarning

    X, y = _wide_blocks()
    bag = BaggingClassifier(MedMIXClassifier(**FAST), n_estimators=2, random_state=0)
    with pytest.warns(LayoutWarning, match="layout was lost.*blocks=embedder.blocks_"):
        bag.fit(X, y)
    assert bag.estimators_[0].modality_names_ == ["features"]
    # A narrow plain table is not a lost layout: no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error", LayoutWarning)
        MedMIXClassifier(**FAST).fit(X.iloc[:, -3:].to_numpy(), y)


def test_explicit_blocks_from_the_embedder_keep_the_layout_through_bagging():
    from sklearn.ensemble import BaggingClassifier

    from medmix_sklearn._layout import parse_feature_names

    X, y = _wide_blocks()
    blocks = parse_feature_names(X.columns)  # a fitted embedder's blocks_ + teacher_blocks_
    bag = BaggingClassifier(MedMIXClassifier(blocks=blocks, **FAST), n_estimators=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bag.fit(X.to_numpy(), y)
    assert bag.estimators_[0].modality_names_ == ["xray", "report", "labs"]
    assert bag.predict_proba(X.to_numpy()).shape == (len(y), 2)
    with pytest.raises(ValueError, match="list of Block"):
        MedMIXClassifier(blocks=[blocks[0], "labs"], **FAST).fit(X.to_numpy(), y)
    with pytest.raises(ValueError, match="unassigned"):
        MedMIXClassifier(blocks=blocks[:2], **FAST).fit(X.to_numpy(), y)


def _tabular_embedder():
    """Raw table (plain column names) and an embedder that passes it through as 3 modalities."""
    X, y = _wide_blocks()
    X.columns = [f"a{k}" for k in range(16)] + [f"b{k}" for k in range(16)] + ["age", "wbc", "crp"]
    embedder = MultimodalExpertEmbedder(
        [("xray", "passthrough", list(X.columns[:16])),
         ("report", "passthrough", list(X.columns[16:32])),
         ("labs", "passthrough", ["age", "wbc", "crp"])],
        cache_dir=None,
    )
    return X, y, embedder


def test_set_output_default_warns_that_the_layout_is_lost():
    from medmix_sklearn.exceptions import LayoutWarning

    X, y, embedder = _tabular_embedder()
    pipe = Pipeline([("embed", embedder), ("clf", MedMIXClassifier(**FAST))])
    pipe.set_output(transform="default")
    with pytest.warns(LayoutWarning, match="layout"):
        pipe.fit(X, y)
    pipe.set_output(transform="pandas")
    with warnings.catch_warnings():
        warnings.simplefilter("error", LayoutWarning)
        pipe.fit(X, y)
    assert pipe.named_steps["clf"].modality_names_ == ["xray", "report", "labs"]


def test_column_transformer_prefix_is_recovered():
    from sklearn.compose import ColumnTransformer

    X, y, embedder = _tabular_embedder()
    X["site"] = np.arange(len(X)) % 3
    ct = ColumnTransformer([("mm", embedder, list(X.columns[:35]))], remainder="passthrough")
    pipe = Pipeline([("ct", ct), ("clf", MedMIXClassifier(**FAST))]).set_output(transform="pandas")
    pipe.fit(X, y)
    clf = pipe.named_steps["clf"]
    assert clf.feature_names_in_[0] == "mm__xray__a0"
    assert clf.modality_names_ == ["xray", "report", "labs", "remainder"]
    assert [b.dim for b in clf.blocks_] == [16, 16, 3, 1]


def test_strip_transformer_prefixes_on_expert_names():
    from medmix_sklearn._layout import parse_feature_names, strip_transformer_prefixes

    names = ["mm__xray__ckpt__0", "mm__xray__ckpt__1", "mm__labs__age",
             "mm__teacher__xray__big__0", "remainder__site"]
    stripped = strip_transformer_prefixes(names)
    assert stripped == ["xray__ckpt__0", "xray__ckpt__1", "labs__age", "teacher__xray__big__0",
                        "remainder__site"]
    blocks = parse_feature_names(stripped)
    assert [(b.modality, b.expert, b.teacher) for b in blocks] == [
        ("xray", "ckpt", False), ("labs", "tabular", False), ("xray", "big", True),
        ("remainder", "tabular", False)]
    # Layout names without a prefix stay as they are.
    plain = ["xray__ckpt__0", "xray__ckpt__1", "labs__age", "teacher__xray__big__0"]
    assert strip_transformer_prefixes(plain) == plain


# -- model files ----------------------------------------------------------------------
def test_model_file_round_trip_without_pickle(image_pipeline):
    import zipfile

    pipe, X, _, folder = image_pipeline
    path = save_model(pipe, folder / "model.medmix", X=X)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        assert "medmix.json" in names and "tensors.safetensors" in names
        assert not any(name.endswith((".pkl", ".pickle", ".joblib")) for name in names)
    loaded, provenance = load_model(path, return_provenance=True)
    assert provenance["estimator"] == "Pipeline"
    np.testing.assert_array_equal(loaded.predict_proba(X), pipe.predict_proba(X))
    # Training can continue, as on the live model.
    clf, live = loaded.named_steps["clf"], pipe.named_steps["clf"]
    Z = pipe.named_steps["embed"].transform(X)
    for model in (clf, live):
        model.partial_fit(Z, np.asarray(pipe.classes_)[np.arange(len(Z)) % 2])
    np.testing.assert_array_equal(clf.predict_proba(Z), live.predict_proba(Z))


def test_model_file_with_a_fitted_tabular_transformer_and_string_labels(tmp_path):
    from sklearn.preprocessing import StandardScaler

    X, y, embedder = _tabular_embedder()
    embedder.modalities[2] = ("labs", StandardScaler(), ["age", "wbc", "crp"])
    labels = np.array(["neg", "pos"])[y]
    pipe = Pipeline([("embed", embedder), ("clf", MedMIXClassifier(**FAST))]).fit(X, labels)
    loaded = load_model(save_model(pipe, tmp_path / "m.medmix"))
    assert loaded.predict(X).tolist() == pipe.predict(X).tolist()
    scaler = loaded.named_steps["embed"].modalities_[2][1]
    np.testing.assert_array_equal(scaler.mean_, embedder.modalities_[2][1].mean_)


class _Hostile:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_hostile_pickle_is_refused_without_running_it(tmp_path):
    import joblib

    target = tmp_path / "created-by-the-file"
    path = tmp_path / "model.joblib"
    joblib.dump({"format": "medmix_sklearn.model", "estimator": _Hostile(str(target))}, path)
    with pytest.raises(ValueError, match="not a medmix model file in the safe format.*trusted=True"):
        load_model(path)
    assert not target.exists()


def test_model_file_naming_a_foreign_class_is_refused(image_pipeline, tmp_path):
    import json
    import zipfile

    pipe, _, _, folder = image_pipeline
    good = save_model(pipe, folder / "good.medmix")
    bad = tmp_path / "bad.medmix"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == "medmix.json":
                header = json.loads(data)
                header["estimator"]["class"] = "os.system"
                data = json.dumps(header).encode()
            dst.writestr(name, data)
    with pytest.raises(ValueError, match="'os.system', which is not one this library builds"):
        load_model(bad)


def test_old_joblib_model_files_load_only_when_trusted(tmp_path):
    import joblib

    from medmix_sklearn.exceptions import UnsafeModelFileWarning

    X, y = _blocks()
    clf = MedMIXClassifier(**FAST).fit(X, y)
    path = tmp_path / "old.joblib"
    joblib.dump({"format": "medmix_sklearn.model", "format_version": 1,
                 "provenance": {}, "estimator": clf}, path)
    with pytest.raises(ValueError, match="trusted=True"):
        load_model(path)
    with pytest.warns(UnsafeModelFileWarning, match="runs code"):
        loaded = load_model(path, trusted=True)
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))


def test_files_get_the_umask_in_force_at_write_time(tmp_path):
    import os

    from medmix_sklearn import write_report

    X, y = _blocks()
    clf = MedMIXClassifier(**FAST).fit(X, y)
    old = os.umask(0o077)
    try:
        model = save_model(clf, tmp_path / "m.medmix")
        report = write_report(tmp_path / "r.html", y_true=y, proba=clf.predict_proba(X)[:, 1])
    finally:
        os.umask(old)
    assert os.stat(model).st_mode & 0o777 == 0o600
    assert os.stat(report).st_mode & 0o777 == 0o600


def test_search_pipeline_after_partial_fit_saves_no_training_rows(tmp_path):
    import pickle

    from medmix_sklearn.model_selection import SearchPipeline

    X, y, embedder = _tabular_embedder()
    pipe = SearchPipeline([("embed", embedder), ("clf", MedMIXClassifier(**FAST))])
    pipe.partial_fit(X, y, classes=[0, 1])
    pipe.partial_fit(X, y)
    marker = np.ascontiguousarray(pipe._partial_state["Xt"].to_numpy(dtype=np.float32)[:3]).tobytes()
    assert marker not in pickle.dumps(pipe)
    path = save_model(pipe, tmp_path / "search.medmix")
    with open(path, "rb") as fh:
        raw = fh.read()
    import zipfile
    with zipfile.ZipFile(path) as archive:
        raw += b"".join(archive.read(name) for name in archive.namelist())
    assert marker not in raw
    loaded = load_model(path)
    loaded.partial_fit(X, y)  # re-transforms with the fitted steps
    assert loaded.named_steps["clf"].n_iter_ == 3


def test_report_draws_labels_as_written_not_as_mathtext(tmp_path):
    from medmix_sklearn import write_report

    X, y = _blocks()
    labels = np.array(["cost $\\x$", "b$"])[y]
    clf = MedMIXClassifier(**FAST).fit(X, labels)
    path = write_report(tmp_path / "r.html", y_true=labels,
                        proba={"cost $\\x$ model": clf.predict_proba(X)}, classes=clf.classes_)
    assert "cost $\\x$" in open(path, encoding="utf-8").read()


# -- numbers are what the user named ------------------------------------------------------
def _labs_frame():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"wbc": rng.normal(8, 2, 40).round(1), "crp": rng.normal(5, 1, 40).round(1)})
    y = (X["wbc"] > 8).astype(int).to_numpy()
    return X, y


def test_passthrough_error_names_column_rows_and_values():
    X, y = _labs_frame()
    X["crp"] = X["crp"].astype(object)
    X.loc[3, "crp"], X.loc[7, "crp"] = "12,5", ">100"
    embedder = MultimodalExpertEmbedder([("labs", "passthrough", ["wbc", "crp"])], cache_dir=None)
    with pytest.raises(ValueError, match=r"column 'crp'.*row 3: '12,5', row 7: '>100'"):
        embedder.fit(X)


@pytest.mark.parametrize("value", [5e38, 1e300, -1e300])
def test_values_beyond_float32_are_named_at_the_embedder(value):
    from sklearn.preprocessing import StandardScaler

    X, y = _labs_frame()
    X.loc[5, "wbc"] = value
    embedder = MultimodalExpertEmbedder([("labs", "passthrough", ["wbc", "crp"])], cache_dir=None)
    with pytest.raises(ValueError, match=r"float32's range.*row 5, column 'wbc'"):
        embedder.fit_transform(X)
    X.loc[5, "wbc"] = 8.0
    scaled = MultimodalExpertEmbedder([("labs", StandardScaler(), ["wbc", "crp"])], cache_dir=None)
    scaled.fit(X)
    X.loc[9, "crp"] = value * 1e10 if abs(value) < 1e300 else value
    with pytest.raises(ValueError, match=r"float32's range.*row 9"):
        scaled.transform(X)


def test_polars_dataframe_is_accepted():
    pl = pytest.importorskip("polars")
    X, y, embedder = _tabular_embedder()
    pipe = Pipeline([("embed", embedder), ("clf", MedMIXClassifier(**FAST))]).fit(X, y)
    frame = pl.from_pandas(X)
    out = embedder.transform(frame)
    assert isinstance(out, pd.DataFrame)
    np.testing.assert_array_equal(out.to_numpy(), embedder.transform(X).to_numpy())
    np.testing.assert_array_equal(pipe.predict_proba(frame), pipe.predict_proba(X))
    refit = Pipeline([("embed", clone_embedder(embedder)), ("clf", MedMIXClassifier(**FAST))])
    np.testing.assert_array_equal(refit.fit(frame, y).predict_proba(X), pipe.predict_proba(X))


def clone_embedder(embedder):
    from sklearn.base import clone

    return clone(embedder)


def test_teacher_gets_sample_weight_through_metadata_routing():
    import sklearn
    from sklearn.base import BaseEstimator, ClassifierMixin

    class Recorder(ClassifierMixin, BaseEstimator):
        seen: list = []

        def fit(self, X, y, sample_weight=None):
            Recorder.seen.append(None if sample_weight is None else np.asarray(sample_weight).copy())
            self.classes_ = np.unique(y)
            return self

        def predict_proba(self, X):
            return np.full((len(X), len(self.classes_)), 1.0 / len(self.classes_))

        def predict(self, X):
            return self.classes_[np.zeros(len(X), dtype=int)]

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    y = (X[:, 0] > 0).astype(int)
    X = np.hstack([X, X[:, :2]])
    layout = {"a": [0, 1, 2, 3], "teacher__t": [4, 5]}
    weights = rng.random(60) + 0.5
    with sklearn.config_context(enable_metadata_routing=True):
        for request in (True, False):
            Recorder.seen = []
            teacher = Recorder().set_fit_request(sample_weight=request)
            clf = MedMIXClassifier(blocks=layout, teacher=teacher, teacher_cv=2, **FAST)
            assert "teacher" in str(clf.get_metadata_routing())
            clf.fit(X, y, sample_weight=weights)
            assert len(Recorder.seen) == 2
            if request:
                assert all(w is not None and len(w) == 30 for w in Recorder.seen)
                assert np.isin(np.concatenate(Recorder.seen), weights).all()
            else:
                assert all(w is None for w in Recorder.seen)
