"""Volume experts: reading NIfTI, DICOM series and arrays; 2.5-D and 3-D embedding."""

import os
import pickle
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from _volumes import write_dicom_series, write_nifti

from medmix_sklearn.datasets import make_phantom_volume
from medmix_sklearn.embedding import MultimodalExpertEmbedder
from medmix_sklearn.exceptions import ExpertNotFoundError, ItemReadError, MissingExtraError
from medmix_sklearn.experts import (
    CT_WINDOWS,
    ImageExpert,
    Volume,
    VolumeExpert,
    _registry,
    list_presets,
    list_volume_architectures,
    read_volume,
)
from medmix_sklearn.experts._registry import get_preset
from medmix_sklearn.experts._volume_io import resample_volume, volume_content_key

pytest.importorskip("nibabel")  # the test extra installs it; a bare install may not

SPACING = (2.0, 1.0, 1.5)  # (z, y, x) mm, anisotropic so that axis mix-ups show


@pytest.fixture(scope="module")
def phantom():
    # Even HU values: the DICOM writer stores (HU + 1024) / 2 exactly.
    volume = make_phantom_volume(
        (10, 24, 20), SPACING, spheres=[((8, 8, 12), 5, 300), ((12, 16, 18), 4, -500)]
    )
    volume[0, 0, 0] = 1000.0  # an asymmetric marker: flips would move it
    return volume


@pytest.fixture
def tiny_slices(tiny_image_model):
    return ImageExpert(tiny_image_model, pretrained=False, image_size=32)


# -- reading ----------------------------------------------------------------
def test_arrays_and_tuples_read_with_their_spacing(phantom):
    v = read_volume(phantom)
    assert v.spacing == (1.0, 1.0, 1.0) and v.array.dtype == np.float32
    np.testing.assert_array_equal(v.array, phantom)
    assert read_volume((phantom.astype(np.int16), SPACING)).spacing == SPACING
    with pytest.raises(ItemReadError, match=r"shape \(24, 20\)"):
        read_volume(phantom[0])
    with pytest.raises(ItemReadError, match="three positive numbers"):
        read_volume((phantom, (1.0, 0.0, 1.0)))
    bad = phantom.copy()
    bad[1, 1, 1] = np.nan
    with pytest.raises(ItemReadError, match="NaN"):
        read_volume(bad)
    with pytest.raises(ItemReadError, match="expected a NIfTI file"):
        read_volume(3.5)


@pytest.mark.parametrize("storage", ["ras", "lps"])
def test_nifti_reads_into_patient_axes(phantom, tmp_path, storage):
    path = write_nifti(phantom, SPACING, tmp_path / "ct.nii.gz", storage=storage)
    v = read_volume(path)
    np.testing.assert_allclose(v.array, phantom)
    assert v.spacing == pytest.approx(SPACING)


def test_dicom_series_is_ordered_by_position_and_rescaled(phantom, tmp_path):
    names = [f"img{n:02d}.dcm" for n in np.random.default_rng(0).permutation(len(phantom))]
    folder = tmp_path / "series"
    write_dicom_series(phantom, SPACING, folder, names=names, window=(-160, 240))
    (folder / "notes.txt").write_text("not a slice")
    v = read_volume(folder)
    np.testing.assert_array_equal(v.array, phantom)  # HU exact after slope/intercept
    assert v.spacing == pytest.approx(SPACING)
    assert v.window == pytest.approx((-160, 240))
    # The same phantom as NIfTI reads to the same voxels.
    nifti = read_volume(write_nifti(phantom, SPACING, tmp_path / "ct.nii"))
    np.testing.assert_allclose(nifti.array, v.array)


def test_dicom_series_errors_name_the_file_and_fix(phantom, tmp_path):
    folder = tmp_path / "gap"
    paths = write_dicom_series(phantom, SPACING, folder)
    os.remove(paths[4])
    with pytest.raises(ItemReadError, match="not evenly spaced.*slice may be missing"):
        read_volume(folder)
    dup = tmp_path / "dup"
    paths = write_dicom_series(phantom[:3], SPACING, dup)
    shutil.copy(paths[1], dup / "copy.dcm")
    with pytest.raises(ItemReadError, match="same position.*Remove the duplicate"):
        read_volume(dup)
    mixed = tmp_path / "mixed"
    write_dicom_series(phantom[:3], SPACING, mixed)
    write_dicom_series(phantom[:3], SPACING, mixed, series_uid="1.2.3.4", names=["b0", "b1", "b2"])
    with pytest.raises(ItemReadError, match="mixes 2 series"):
        read_volume(mixed)
    with pytest.raises(ItemReadError, match="single DICOM file.*folder"):
        read_volume(paths[0])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ItemReadError, match="holds no DICOM file"):
        read_volume(empty)
    with pytest.raises(ItemReadError, match="no such file"):
        read_volume(tmp_path / "absent.nii.gz")


def test_missing_nibabel_names_the_extra(phantom, tmp_path, monkeypatch):
    import builtins

    path = write_nifti(phantom, SPACING, tmp_path / "ct.nii")
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "nibabel":
            raise ImportError("no nibabel")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(MissingExtraError, match=r"medmix_sklearn\[volumes\]"):
        read_volume(path)


def test_content_keys_follow_content_not_location(phantom, tmp_path):
    a = write_dicom_series(phantom, SPACING, tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    for i, path in enumerate(sorted(os.listdir(tmp_path / "b"))):
        os.rename(tmp_path / "b" / path, tmp_path / "b" / f"renamed{i}.dcm")
    assert volume_content_key(tmp_path / "a") == volume_content_key(tmp_path / "b")
    changed = phantom.copy()
    changed[3, 5, 5] += 2
    write_dicom_series(changed, SPACING, tmp_path / "c")
    assert volume_content_key(tmp_path / "c") != volume_content_key(tmp_path / "a")
    n1 = write_nifti(phantom, SPACING, tmp_path / "x.nii")
    shutil.copy(n1, tmp_path / "y.nii")
    assert volume_content_key(n1) == volume_content_key(tmp_path / "y.nii")
    assert volume_content_key(phantom) != volume_content_key((phantom, SPACING))
    assert volume_content_key((phantom, SPACING)) != volume_content_key((phantom, (1, 1, 1)))
    assert len(a) == len(phantom)


# -- preprocessing -------------------------------------------------------------
def test_resampling_keeps_a_linear_ramp_and_the_field_of_view():
    z = np.arange(11, dtype=np.float32)[:, None, None] * np.ones((1, 4, 4), np.float32)
    v = resample_volume(Volume(z * 10.0, (2.0, 1.0, 1.0)), (1.0, 1.0, 1.0))
    assert v.array.shape == (21, 4, 4) and v.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_allclose(v.array[:, 0, 0], np.arange(21) * 5.0, atol=1e-4)


def test_ct_windows_and_mr_percentiles():
    values = np.linspace(-1200, 400, 8 * 8 * 8, dtype=np.float32).reshape(8, 8, 8)
    volume = Volume(values, (1.0, 1.0, 1.0), window=(-100.0, 100.0))
    lung = VolumeExpert("test_i3resnet", pretrained=False, window="lung")
    scaled = lung._scaled(volume, lung._spec())
    low, high = CT_WINDOWS["lung"]
    np.testing.assert_allclose(scaled, np.clip((values - low) / (high - low), 0, 1), atol=1e-6)
    dicom = VolumeExpert("test_i3resnet", pretrained=False, window="dicom")
    np.testing.assert_allclose(
        dicom._scaled(volume, dicom._spec()), np.clip((values + 100) / 200, 0, 1), atol=1e-6
    )
    mr = VolumeExpert("test_i3resnet", pretrained=False, modality="mr", window=(10, 90))
    out = mr._scaled(Volume(values * 3 + 7, (1, 1, 1)), mr._spec())
    # Percentiles of each volume: scaling the intensities changes nothing.
    np.testing.assert_allclose(out, mr._scaled(Volume(values, (1, 1, 1)), mr._spec()), atol=1e-5)
    assert out.min() == 0.0 and out.max() == 1.0
    for expert, match in [
        (VolumeExpert("test_i3resnet", pretrained=False, modality="mr", window="lung"), "MRI"),
        (VolumeExpert("test_i3resnet", pretrained=False, window="liver"), "Unknown CT window"),
        (VolumeExpert("test_i3resnet", pretrained=False, window=(5, 5)), "low < high"),
        (VolumeExpert("test_i3resnet", pretrained=False, spacing=(1, 2)), "three positive"),
    ]:
        with pytest.raises(ValueError, match=match):
            expert.fingerprint()


# -- 2.5-D ----------------------------------------------------------------------
def test_slices_expert_pools_the_2d_embeddings_of_evenly_spread_slices(phantom, tiny_slices):
    expert = VolumeExpert(tiny_slices, n_slices=4, window="soft_tissue")
    assert expert.name == f"{tiny_slices.name}-2.5d" and expert.kind == "volume"
    volume = expert.read((phantom, SPACING))
    out = expert.embed([volume, volume])
    assert out.shape == (2, tiny_slices.output_dim) == (2, expert.output_dim)
    # By hand: slices 1, 3, 6, 8 of 10, windowed to 0..255, embedded, averaged.
    low, high = CT_WINDOWS["soft_tissue"]
    picks = [int((k + 0.5) * 10 / 4) for k in range(4)]
    slices = [
        tiny_slices.read(np.rint(np.clip((phantom[z] - low) / (high - low), 0, 1) * 255)
                         .astype(np.uint8))
        for z in picks
    ]
    np.testing.assert_allclose(out[0], tiny_slices.embed(slices).mean(axis=0), atol=1e-5)
    both = VolumeExpert(tiny_slices, n_slices=4, window="soft_tissue", pooling="mean_max")
    wide = both.embed([volume])
    assert wide.shape == (1, 2 * tiny_slices.output_dim)
    np.testing.assert_allclose(wide[0, : tiny_slices.output_dim], out[0], atol=1e-5)


def test_slices_fingerprint_follows_both_experts_without_loading(tiny_slices, tiny_image_model):
    expert = VolumeExpert(tiny_slices, n_slices=4)
    first = expert.fingerprint()
    assert not expert.is_loaded and not tiny_slices.is_loaded
    assert VolumeExpert(ImageExpert(tiny_image_model, pretrained=False, image_size=32),
                        n_slices=4).fingerprint() == first
    assert VolumeExpert(tiny_slices, n_slices=5).fingerprint() != first
    assert VolumeExpert(tiny_slices, n_slices=4, spacing=(2, 2, 2)).fingerprint() != first
    tiny_slices.image_size = 48  # the 2-D expert changes: so does the volume expert
    assert expert.fingerprint() != first
    expert.set_params(model__image_size=32)
    assert expert.fingerprint() == first


def test_pickle_drops_both_models(phantom, tiny_slices):
    expert = VolumeExpert(tiny_slices, n_slices=2)
    before = expert.embed([expert.read(phantom)])
    assert expert.is_loaded and tiny_slices.is_loaded
    clone = pickle.loads(pickle.dumps(expert))
    assert not clone.is_loaded and not clone.model.is_loaded
    np.testing.assert_allclose(clone.embed([clone.read(phantom)]), before, atol=1e-6)
    expert.unload()
    assert not tiny_slices.is_loaded


def test_a_text_expert_is_not_a_slice_expert(text_expert):
    with pytest.raises(ValueError, match="needs a 2-D image expert"):
        VolumeExpert(text_expert).fingerprint()


@pytest.fixture
def text_expert(tiny_text_model_dir):
    from medmix_sklearn.experts import TextExpert

    return TextExpert(tiny_text_model_dir)


# -- 3-D ------------------------------------------------------------------------
def test_3d_backbone_shapes_padding_and_determinism(phantom):
    expert = VolumeExpert("test_i3resnet", pretrained=False, input_shape=(8, 16, 16))
    assert expert.output_dim == 64 and "test_i3resnet" in list_volume_architectures()
    tensor = expert.preprocess(expert.read(phantom))
    assert tuple(tensor.shape) == (1, 8, 16, 16)
    small = expert.preprocess(expert.read(phantom[:4, :6, :6]))
    assert tuple(small.shape) == (1, 8, 16, 16) and float(small[0, 0, 0, 0]) == 0.0
    a = expert.embed([phantom, phantom[:4]], batch_size=2)
    b = VolumeExpert("test_i3resnet", pretrained=False, input_shape=(8, 16, 16)).embed([phantom])
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    assert not np.allclose(a[0], a[1])
    # Without input_shape each volume keeps its own shape and goes alone.
    free = VolumeExpert("test_i3resnet", pretrained=False)
    assert free.embed([phantom, phantom[:4]], batch_size=8).shape == (2, 64)


def test_3d_checkpoint_with_a_prefix_loads_and_changes_the_embedding(phantom, tmp_path):
    from medmix_sklearn.experts._resnet3d import build_resnet3d

    torch.manual_seed(7)
    net = build_resnet3d("test_i3resnet")
    path = tmp_path / "encoder.pt"
    torch.save({"state_dict": {f"encode_image.i3_resnet.{k}": v.to(torch.bfloat16)
                               if v.is_floating_point() else v
                               for k, v in net.state_dict().items()}}, path)
    loaded = VolumeExpert("test_i3resnet", checkpoint_path=path)
    random = VolumeExpert("test_i3resnet", pretrained=False)
    assert loaded.fingerprint() != random.fingerprint()
    out = loaded.embed([phantom])
    assert not np.allclose(out, random.embed([phantom]))
    net.eval()
    with torch.no_grad():
        by_hand = net.to(torch.bfloat16).float()(loaded.preprocess(loaded.read(phantom))[None])
    np.testing.assert_allclose(out, by_hand.numpy(), rtol=1e-4, atol=1e-5)
    wrong = tmp_path / "wrong.pt"
    torch.save(build_resnet3d("i3resnet18").state_dict(), wrong)
    with pytest.raises(ValueError, match="not for this architecture"):
        VolumeExpert("test_i3resnet", checkpoint_path=wrong).embed([phantom])


def test_3d_names_and_weights_errors():
    with pytest.raises(ExpertNotFoundError, match="Close matches: 'i3resnet152'"):
        VolumeExpert("i3resnet15").fingerprint()
    with pytest.raises(ValueError, match="pretrained=False"):
        VolumeExpert("i3resnet18").fingerprint()
    with pytest.raises(ExpertNotFoundError, match=r"VolumeExpert\(ImageExpert"):
        VolumeExpert("efficientnet_lite0").fingerprint()
    with pytest.raises(FileNotFoundError, match="not a file"):
        VolumeExpert("test_i3resnet", checkpoint_path="/nonexistent.pt").fingerprint()


def test_ct_presets_are_registered_with_their_extra(monkeypatch):
    assert list_presets("volume") == ["ct_i3resnet152_astra"]
    preset = get_preset("ct_i3resnet152_astra")
    assert preset.data_config["spacing"] == (3.0, 1.5, 1.5)
    monkeypatch.setitem(
        _registry._PRESETS, preset.name, replace(preset, requires=("no_such_shard_package",))
    )
    with pytest.raises(MissingExtraError, match=r"medmix_sklearn\[ct-weights\]"):
        VolumeExpert("ct_i3resnet152_astra").fingerprint()


# -- in the embedder ---------------------------------------------------------------
def test_embedder_embeds_volume_files_with_missing_rows_and_caches(phantom, tmp_path,
                                                                  tiny_slices):
    nifti = write_nifti(phantom, SPACING, tmp_path / "a.nii.gz")
    series = tmp_path / "series"
    write_dicom_series(phantom + 2.0, SPACING, series)
    frame = pd.DataFrame({"ct": [nifti, None, str(series), nifti]})
    experts = [
        VolumeExpert(tiny_slices, n_slices=2),
        VolumeExpert("test_i3resnet", pretrained=False, input_shape=(8, 16, 16)),
    ]
    embedder = MultimodalExpertEmbedder(
        [("ct", experts, "ct")], cache_dir=tmp_path / "cache", device="cpu", batch_size=2
    )
    out = np.asarray(embedder.fit_transform(frame))
    names = embedder.get_feature_names_out()
    assert out.shape == (4, tiny_slices.output_dim + 64)
    assert names[0].startswith(f"ct__{tiny_slices.name}-2.5d__")
    assert names[-1] == "ct__test_i3resnet__63"
    assert np.isnan(out[1]).all() and np.isfinite(out[[0, 2, 3]]).all()
    np.testing.assert_array_equal(out[0], out[3])
    assert not np.allclose(out[0], out[2])
    fresh = [
        VolumeExpert(ImageExpert(tiny_slices.model, pretrained=False, image_size=32), n_slices=2),
        VolumeExpert("test_i3resnet", pretrained=False, input_shape=(8, 16, 16)),
    ]
    again = np.asarray(MultimodalExpertEmbedder(
        [("ct", fresh, "ct")], cache_dir=tmp_path / "cache", device="cpu"
    ).fit_transform(frame))
    np.testing.assert_allclose(again, out, equal_nan=True)
    assert not any(e.is_loaded for e in fresh)  # every row came from the cache


def test_warm_pass_over_a_series_folder_reads_no_slice(phantom, tmp_path, monkeypatch):
    import medmix_sklearn.experts._volume as volume_module

    series = tmp_path / "series"
    write_dicom_series(phantom, SPACING, series)
    # Treat the slices as old enough to trust (their change times cannot be set back).
    monkeypatch.setattr("medmix_sklearn.embedding._cache.RACY_SECONDS", -1e9)
    frame = pd.DataFrame({"ct": [str(series)]})

    def embed():
        expert = VolumeExpert("test_i3resnet", pretrained=False, input_shape=(8, 16, 16))
        embedder = MultimodalExpertEmbedder(
            [("ct", [expert], "ct")], cache_dir=tmp_path / "cache", device="cpu"
        )
        return np.asarray(embedder.fit_transform(frame))

    hashed = []
    real_key = volume_module.volume_content_key
    monkeypatch.setattr(
        volume_module, "volume_content_key", lambda item: hashed.append(item) or real_key(item)
    )
    cold = embed()
    assert len(hashed) == 1
    warm = embed()
    assert len(hashed) == 1  # the key came from the slices' identity, no slice was read
    np.testing.assert_array_equal(warm, cold)
    # A slice rewritten with other voxels gets a new identity, so the folder is hashed again.
    write_dicom_series(phantom + 100.0, SPACING, series)
    changed = embed()
    assert len(hashed) == 2
    assert not np.allclose(changed, cold)
