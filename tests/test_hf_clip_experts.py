"""Hugging Face vision experts and CLIP-style towers, with tiny random models on disk."""

import json
import os
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import _VOCAB_WORDS

from medmix_sklearn.embedding import MultimodalExpertEmbedder
from medmix_sklearn.exceptions import ExpertNotFoundError
from medmix_sklearn.experts import (
    CLIPImageExpert,
    CLIPTextExpert,
    HFImageExpert,
    ImageExpert,
    VolumeExpert,
)

TEXTS = ["no acute cardiopulmonary disease", "mild right lower lobe pneumonia", "normal heart"]


def _images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(3)]


def _write_vocab_tokenizer(directory):
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_VOCAB_WORDS]
    path = os.path.join(directory, "vocab.txt")
    with open(path, "w") as fh:
        fh.write("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=path, do_lower_case=True).save_pretrained(directory)
    return len(vocab)


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    directory = str(tmp_path_factory.mktemp("tiny_vit"))
    config = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=64, image_size=32, patch_size=8)
    torch.manual_seed(0)
    ViTModel(config).save_pretrained(directory)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory):
    from transformers import BitImageProcessor, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    directory = str(tmp_path_factory.mktemp("tiny_dino"))
    config = Dinov2WithRegistersConfig(hidden_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, mlp_ratio=2, image_size=32,
                                       patch_size=8, num_register_tokens=4)
    torch.manual_seed(0)
    Dinov2WithRegistersModel(config).save_pretrained(directory)
    BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                      image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def hf_clip_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    directory = str(tmp_path_factory.mktemp("tiny_hf_clip"))
    vocab_size = _write_vocab_tokenizer(directory)
    config = CLIPConfig(
        text_config={"vocab_size": vocab_size, "hidden_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "intermediate_size": 64,
                     "max_position_embeddings": 32, "bos_token_id": 2, "eos_token_id": 3,
                     "pad_token_id": 0},
        vision_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "intermediate_size": 64, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": 32},
                       crop_size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def open_clip_dir(tmp_path_factory):
    open_clip = pytest.importorskip("open_clip")
    directory = str(tmp_path_factory.mktemp("tiny_open_clip"))
    config = {
        "model_cfg": {
            "embed_dim": 16,
            "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8,
                           "head_width": 16},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2,
                         "layers": 1},
        },
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    }
    with open(os.path.join(directory, "open_clip_config.json"), "w") as fh:
        json.dump(config, fh)
    torch.manual_seed(1)
    model = open_clip.create_model(f"local-dir:{directory}", load_weights=False)
    torch.save(model.state_dict(), os.path.join(directory, "open_clip_pytorch_model.bin"))
    return directory


# -- Hugging Face vision ------------------------------------------------------------
def _hf_forward(directory, images):
    from transformers import AutoImageProcessor, AutoModel

    processor = AutoImageProcessor.from_pretrained(directory)
    model = AutoModel.from_pretrained(directory).eval()
    with torch.no_grad():
        return model(**processor(images=images, return_tensors="pt"))


def test_hf_vision_pooling_matches_the_model(vit_dir):
    images = _images()
    reference = _hf_forward(vit_dir, images)
    expert = HFImageExpert(vit_dir)
    assert expert.output_dim == 32 and expert.kind == "image"
    fingerprint = expert.fingerprint()
    assert not expert.is_loaded  # neither fingerprint nor output_dim loads the model
    cls = expert.embed([expert.read(i) for i in images], batch_size=2)
    np.testing.assert_allclose(cls, reference.last_hidden_state[:, 0].numpy(), atol=1e-5)
    mean = HFImageExpert(vit_dir, pooling="mean").embed([expert.read(i) for i in images])
    np.testing.assert_allclose(mean, reference.last_hidden_state[:, 1:].mean(1).numpy(),
                               atol=1e-5)
    pooler = HFImageExpert(vit_dir, pooling="pooler").embed([expert.read(i) for i in images])
    np.testing.assert_allclose(pooler, reference.pooler_output.numpy(), atol=1e-5)
    assert HFImageExpert(vit_dir, pooling="mean").fingerprint() != fingerprint


def test_hf_vision_mean_leaves_out_register_tokens(dino_dir):
    images = _images()
    reference = _hf_forward(dino_dir, images).last_hidden_state  # (3, 1 + 4 + 16, 32)
    assert reference.shape[1] == 21
    expert = HFImageExpert(dino_dir, pooling="mean")
    out = expert.embed([expert.read(i) for i in images])
    np.testing.assert_allclose(out, reference[:, 5:].mean(1).numpy(), atol=1e-5)


def test_hf_vision_is_picklable_and_a_slice_expert(vit_dir):
    expert = HFImageExpert(vit_dir)
    image = expert.read(_images()[0])
    before = expert.embed([image])
    clone = pickle.loads(pickle.dumps(expert))
    assert not clone.is_loaded
    np.testing.assert_allclose(clone.embed([image]), before, atol=1e-6)
    volume = np.random.default_rng(0).normal(0, 300, (6, 20, 20)).astype(np.float32)
    slices = VolumeExpert(HFImageExpert(vit_dir), n_slices=3)
    assert slices.name == f"{expert.name}-2.5d"
    assert slices.embed([slices.read(volume)]).shape == (1, 32)


def test_hf_vision_errors_name_the_fix(hf_clip_dir, tmp_path):
    with pytest.raises(ValueError, match="Use CLIPImageExpert"):
        HFImageExpert(hf_clip_dir).output_dim
    with pytest.raises(ExpertNotFoundError, match="does not exist"):
        HFImageExpert(str(tmp_path / "absent")).fingerprint()
    with pytest.raises(ExpertNotFoundError, match="HF_HUB_OFFLINE"):
        HFImageExpert("nobody/no-such-vision-model").fingerprint()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="no weights file"):
        HFImageExpert(str(empty)).fingerprint()


# -- CLIP, transformers backend --------------------------------------------------------
def test_transformers_clip_towers_alone_match_the_whole_model(hf_clip_dir):
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    images = _images()
    whole = CLIPModel.from_pretrained(hf_clip_dir).eval()
    processor = CLIPImageProcessor.from_pretrained(hf_clip_dir)
    tokenizer = AutoTokenizer.from_pretrained(hf_clip_dir)
    with torch.no_grad():
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        image_ref = whole.visual_projection(whole.vision_model(pixel_values=pixels).pooler_output)
        tokens = tokenizer(TEXTS, padding=True, return_tensors="pt")
        text_ref = whole.text_projection(
            whole.text_model(input_ids=tokens["input_ids"],
                             attention_mask=tokens["attention_mask"]).pooler_output
        )
    image_expert = CLIPImageExpert(hf_clip_dir)
    text_expert = CLIPTextExpert(hf_clip_dir)
    assert image_expert.output_dim == text_expert.output_dim == 16
    assert image_expert.kind == "image" and text_expert.kind == "text"
    assert image_expert.fingerprint() != text_expert.fingerprint()
    assert not image_expert.is_loaded
    np.testing.assert_allclose(
        image_expert.embed([image_expert.read(i) for i in images]), image_ref.numpy(), atol=1e-5
    )
    np.testing.assert_allclose(text_expert.embed(TEXTS, batch_size=2), text_ref.numpy(),
                               atol=1e-5)
    unit = CLIPImageExpert(hf_clip_dir, normalize=True).embed([image_expert.read(images[0])])
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)


# -- CLIP, open_clip backend -------------------------------------------------------------
def test_open_clip_towers_alone_match_the_whole_model(open_clip_dir):
    import open_clip
    from PIL import Image

    images = _images()
    name = f"local-dir:{open_clip_dir}"
    whole, _, preprocess = open_clip.create_model_and_transforms(name)
    whole.eval()
    tokenizer = open_clip.get_tokenizer(name)
    with torch.no_grad():
        image_ref = whole.encode_image(
            torch.stack([preprocess(Image.fromarray(i)) for i in images])
        )
        text_ref = whole.encode_text(tokenizer(TEXTS))
    image_expert = CLIPImageExpert(open_clip_dir)
    text_expert = CLIPTextExpert(open_clip_dir, backend="open_clip")
    assert image_expert.output_dim == 16
    np.testing.assert_allclose(
        image_expert.embed([image_expert.read(i) for i in images]), image_ref.numpy(), atol=1e-5
    )
    np.testing.assert_allclose(text_expert.embed(TEXTS), text_ref.numpy(), atol=1e-5)
    loaded = text_expert._get_model("cpu")[0]
    assert loaded.visual is None  # only the text tower stays in memory
    clone = pickle.loads(pickle.dumps(text_expert))
    assert not clone.is_loaded and clone.fingerprint() == text_expert.fingerprint()


def test_open_clip_architecture_names_and_errors(open_clip_dir, hf_clip_dir, tmp_path):
    pytest.importorskip("open_clip")
    tagged = CLIPImageExpert("ViT-B-32", pretrained="openai")
    assert tagged.output_dim == 512 and len(tagged.fingerprint()) == 64  # no download
    assert CLIPImageExpert("ViT-B-32").fingerprint() != tagged.fingerprint()
    with pytest.raises(ValueError, match="neither a weights file nor an open_clip tag"):
        CLIPImageExpert("ViT-B-32", pretrained="no-such-tag").fingerprint()
    with pytest.raises(ValueError, match="backend='auto'"):
        CLIPImageExpert(open_clip_dir, backend="transformers").fingerprint()
    with pytest.raises(ValueError, match="Leave pretrained=None"):
        CLIPTextExpert(hf_clip_dir, pretrained="openai").fingerprint()
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ExpertNotFoundError, match="use HFImageExpert"):
        CLIPImageExpert(str(plain)).fingerprint()


def test_clip_towers_in_the_embedder(hf_clip_dir, tiny_image_model):
    images = _images()
    frame = pd.DataFrame({"image": [images[0], None, images[1]],
                          "report": [TEXTS[0], TEXTS[1], None]})
    embedder = MultimodalExpertEmbedder(
        [
            ("image", [CLIPImageExpert(hf_clip_dir, name="clip"),
                       ImageExpert(tiny_image_model, pretrained=False)], "image"),
            ("report", [CLIPTextExpert(hf_clip_dir, name="clip")], "report"),
        ],
        cache_dir=None, device="cpu",
    )
    out = np.asarray(embedder.fit_transform(frame))
    names = list(embedder.get_feature_names_out())
    assert "image__clip__15" in names and "report__clip__0" in names
    clip_cols = [i for i, n in enumerate(names) if n.startswith("image__clip__")]
    assert np.isnan(out[1, clip_cols]).all() and np.isfinite(out[[0, 2]][:, clip_cols]).all()
