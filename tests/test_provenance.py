"""Model files: provenance recorded on save, expert fingerprints checked on load."""

import json
import warnings
import zipfile

import joblib
import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline

from medmix_sklearn import __version__
from medmix_sklearn._provenance import describe_model, load_model, save_model
from medmix_sklearn.datasets import make_multimodal_classification
from medmix_sklearn.embedding import MultimodalExpertEmbedder
from medmix_sklearn.exceptions import ExpertFingerprintWarning, UnsafeModelFileWarning
from medmix_sklearn.experts import ImageExpert
from medmix_sklearn.fusion import MedMIXClassifier

LABS = ["wbc", "crp", "heart_rate", "temperature", "spo2"]


def _write_checkpoint(path, model_name, shift=0.0):
    import timm

    torch.manual_seed(0)
    net = timm.create_model(model_name, pretrained=False, num_classes=0)
    state = {k: v + shift if v.is_floating_point() else v for k, v in net.state_dict().items()}
    torch.save(state, path)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, tiny_image_model):
    folder = tmp_path_factory.mktemp("provenance")
    checkpoint = folder / "weights.pth"
    _write_checkpoint(checkpoint, tiny_image_model)
    X, y = make_multimodal_classification(
        24, image_dir=folder / "images", image_size=32, missing_rate=0.25, random_state=0
    )
    embedder = MultimodalExpertEmbedder(
        [
            ("xray", [ImageExpert(tiny_image_model, checkpoint_path=str(checkpoint), name="ckpt"),
                      ImageExpert(tiny_image_model, pretrained=False)], "image_path"),
            ("labs", "passthrough", LABS),
        ],
        teachers=[("xray", [ImageExpert(tiny_image_model, pretrained=False, name="big")],
                   "image_path")],
        cache_dir=None,
    )
    pipe = Pipeline([("embed", embedder),
                     ("clf", MedMIXClassifier(max_epochs=2, early_stopping=False, random_state=0))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        pipe.fit(X, y)
    return pipe, X, y, checkpoint, folder


def test_describe_model_records_experts_layout_and_data(fitted):
    pipe, X, y, _, _ = fitted
    card = describe_model(pipe, X)
    assert card["version"] == __version__
    assert card["estimator"] == "Pipeline"
    experts = card["experts"]
    assert [(e["role"], e["modality"], e["name"]) for e in experts] == [
        ("student", "xray", "ckpt"), ("student", "xray", "test_efficientnet"),
        ("teacher", "xray", "big"),
    ]
    embedder = pipe.named_steps["embed"]
    expected = [e.fingerprint() for e in embedder.modalities_[0][1]]
    assert [e["fingerprint"] for e in experts[:2]] == expected
    assert len(set(expected)) == 2  # checkpoint and random init differ
    assert all(e["output_dim"] == 256 for e in experts)
    layout = card["block_layout"]
    assert layout["feature_names_out"] == list(embedder.get_feature_names_out())
    assert {(b["modality"], b["expert"], b["dim"], b["teacher"]) for b in layout["blocks"]} == {
        ("xray", "ckpt", 256, False), ("xray", "test_efficientnet", 256, False),
        ("labs", "tabular", 5, False), ("xray", "big", 256, True),
    }
    data = card["training_data"]
    assert (data["n_samples"], data["n_features"]) == X.shape
    present = X["image_path"].notna().mean()
    assert data["missing_rate"]["xray"] == pytest.approx(1 - present)


def test_round_trip_predicts_the_same_without_warning(fitted, tmp_path):
    pipe, X, y, _, _ = fitted
    path = save_model(pipe, tmp_path / "model.medmix", X=X, metadata={"note": "test"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExpertFingerprintWarning)
        loaded, provenance = load_model(path, return_provenance=True)
    assert provenance["metadata"] == {"note": "test"}
    assert provenance["training_data"]["n_samples"] == len(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        np.testing.assert_allclose(loaded.predict_proba(X), pipe.predict_proba(X), atol=1e-6)


def test_changed_weights_warn_with_both_fingerprints(fitted, tmp_path):
    pipe, X, _, checkpoint, folder = fitted
    path = save_model(pipe, tmp_path / "model.medmix")
    before = pipe.named_steps["embed"].modalities_[0][1][0].fingerprint()
    original = checkpoint.read_bytes()
    try:
        _write_checkpoint(checkpoint, "test_efficientnet", shift=0.01)
        with pytest.warns(ExpertFingerprintWarning) as record:
            loaded = load_model(path)
    finally:
        checkpoint.write_bytes(original)
    assert len(record) == 1  # only the expert whose file changed
    message = str(record[0].message)
    now = loaded.named_steps["embed"].modalities_[0][1][0].fingerprint()
    assert now != before
    assert "'ckpt'" in message and "'xray'" in message
    assert before in message and now in message


def test_unverifiable_expert_warns(fitted, tmp_path):
    pipe, _, _, checkpoint, _ = fitted
    path = save_model(pipe, tmp_path / "model.medmix")
    original = checkpoint.read_bytes()
    checkpoint.unlink()
    try:
        with pytest.warns(ExpertFingerprintWarning, match="'ckpt'.*cannot be verified"):
            load_model(path)
    finally:
        checkpoint.write_bytes(original)


def test_load_rejects_files_that_are_not_model_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="No model file"):
        load_model(tmp_path / "absent.medmix")
    garbage = tmp_path / "garbage.medmix"
    garbage.write_bytes(b"this is not a model file")
    with pytest.raises(ValueError, match="is not a medmix model file in the safe format"):
        load_model(garbage)
    # Pickles are read only with trusted=True; then their header is checked.
    plain = tmp_path / "plain.joblib"
    joblib.dump({"estimator": MedMIXClassifier()}, plain)
    with pytest.raises(ValueError, match="in the safe format"):
        load_model(plain)
    with pytest.warns(UnsafeModelFileWarning), pytest.raises(
        ValueError, match="holding a dict without the 'medmix_sklearn.model' header"
    ):
        load_model(plain, trusted=True)
    future = tmp_path / "future.medmix"
    with zipfile.ZipFile(future, "w") as archive:
        archive.writestr("medmix.json", json.dumps({"format": "medmix_sklearn.model",
                                                    "format_version": 99}))
    with pytest.raises(ValueError, match="format version 99"):
        load_model(future)


def test_save_requires_a_fitted_estimator(tmp_path):
    with pytest.raises(NotFittedError):
        save_model(MedMIXClassifier(), tmp_path / "m.medmix")
    assert not (tmp_path / "m.medmix").exists()


def test_bare_classifier_records_its_layout(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = (X[:, 0] > 0).astype(int)
    clf = MedMIXClassifier(max_epochs=2, early_stopping=False, random_state=0).fit(X, y)
    path = save_model(clf, tmp_path / "m.medmix", X=X)
    _, provenance = load_model(path, return_provenance=True)
    assert provenance["experts"] == []
    assert provenance["training_data"]["n_samples"] == 40
    assert provenance["block_layout"]["feature_names_out"] is None
