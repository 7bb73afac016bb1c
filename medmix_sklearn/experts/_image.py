"""Image experts: any timm backbone, used frozen for its pooled features."""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import numpy as np
from sklearn.utils._param_validation import Interval

from ..exceptions import ExpertNotFoundError
from ._base import BaseExpert, _init_weights, _isolated_global_rng
from ._io import file_sha256, image_content_key, load_image
from ._registry import (
    Preset,
    find_preset,
    list_presets,
    load_state_dict_in_order,
    not_found_message,
)

__all__ = ["ImageExpert"]

logger = logging.getLogger(__name__)

# Seed of the random initialisation used with ``pretrained=False``: two loads
# give equal weights, so the fingerprint of a random expert stays valid. The
# weights are drawn from a generator of their own (see ``_init_weights``), never
# from torch's process-wide one, so loads in several threads agree.
_RANDOM_INIT_SEED = 0
_RANDOM_INIT_SCHEME = "generator-v2"
_HF_HUB_PREFIX = "hf-hub:"
_CLASSIFIER_PREFIXES = ("_fc.", "fc.", "classifier.", "head.", "head.fc.", "last_linear.")


@dataclass(frozen=True, slots=True)
class _ImageSpec:
    """What an ImageExpert's parameters resolve to (no model built)."""

    architecture: str
    weights: str  # "random", "checkpoint", "preset" or "timm"
    weights_path: str | None
    preset: Preset | None


@dataclass(frozen=True, slots=True)
class _ArchInfo:
    output_dim: int
    data_config: dict
    create_kwargs: dict
    pretrained_source: str
    classifier: str


@dataclass(slots=True)
class _LoadedImageModel:
    module: Any
    transform: Any




def _timm():
    import timm

    return timm


@functools.cache
def _arch_info(architecture: str, image_size: int | None) -> _ArchInfo:
    """Architecture facts, found once per process and (architecture, image_size) by
    building the network on the meta device (no memory, no weights)."""
    import torch
    from timm.data import resolve_data_config

    timm = _timm()
    create_kwargs: dict = {}
    try:
        with torch.device("meta"):
            model = timm.create_model(architecture, pretrained=False, num_classes=0)
            if image_size is not None and model.pretrained_cfg.get("fixed_input_size"):
                # Models with position embeddings (ViT) must be built for the size.
                create_kwargs["img_size"] = image_size
                model = timm.create_model(
                    architecture, pretrained=False, num_classes=0, **create_kwargs
                )
    except Exception as exc:
        if architecture.startswith(_HF_HUB_PREFIX):
            raise OSError(
                f"Cannot build the timm model {architecture!r}: its configuration must "
                "come from the Hugging Face Hub, which is unreachable (offline?) and not "
                "in the local cache. Use a timm model name or an offline preset "
                f"({', '.join(list_presets('image'))}) instead."
            ) from exc
        raise
    data_config = dict(resolve_data_config({}, model=model))
    if image_size is not None:
        data_config["input_size"] = (3, int(image_size), int(image_size))
    try:
        with torch.inference_mode():
            probe = torch.empty((1, *data_config["input_size"]), device="meta")
            output_dim = int(model(probe).shape[-1])
    except Exception:  # an op without a meta kernel: trust the attribute
        output_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    source = cfg.get("hf_hub_id") or cfg.get("url") or "unknown"
    tag = cfg.get("tag") or ""
    info = _ArchInfo(
        output_dim=output_dim,
        data_config=data_config,
        create_kwargs=create_kwargs,
        pretrained_source=f"{source}:{tag}",
        classifier=str(cfg.get("classifier") or ""),
    )
    return info


def _read_checkpoint(path: str) -> dict:
    """A state dict from a ``.pth``/``.pt``/``.bin``/``.safetensors`` file."""
    import torch

    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"Cannot read the checkpoint {path!r}: {exc}. Expected a PyTorch state "
            "dict saved with torch.save, or a .safetensors file."
        ) from exc
    for wrapper in ("state_dict_ema", "state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict):
        raise ValueError(
            f"Cannot read the checkpoint {path!r}: expected a state dict (a mapping of "
            f"names to tensors). Got {type(state).__name__} instead."
        )
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}


def _load_checkpoint(model, path: str, classifier: str) -> None:
    """Load by names when they match timm's, else by position with equal shapes."""
    state = _read_checkpoint(path)
    target = model.state_dict()
    by_name = all(
        k in state and tuple(getattr(state[k], "shape", ())) == tuple(v.shape)
        for k, v in target.items()
    )
    if by_name:
        model.load_state_dict({k: state[k] for k in target}, strict=True)
        return
    prefixes = _CLASSIFIER_PREFIXES + ((classifier + ".",) if classifier else ())
    load_state_dict_in_order(model, state, source=path, drop_prefixes=prefixes)


class ImageExpert(BaseExpert):
    """A frozen timm image backbone whose pooled features embed images.

    Parameters
    ----------
    model : str
        A timm model name (``"resnet50"``, ``"convnext_tiny.fb_in22k"``), a
        ``"hf-hub:"`` id, or an offline preset name (see
        :func:`~medmix_sklearn.experts.list_presets`), e.g.
        ``"efficientnet_lite0"``.
    pretrained : bool, default=True
        Load pretrained weights: the preset's packaged weights for a preset
        name, else timm's pretrained weights (downloaded, so not offline).
        With ``False`` the weights are a fixed-seed random initialisation,
        identical on every load.
    checkpoint_path : str or path-like, default=None
        A state-dict file to load instead; takes precedence over
        ``pretrained``. Entries are matched by name, or by position when the
        names differ but the shapes agree.
    image_size : int, default=None
        Square input size; by default the model's own data config decides.
    name : str, default=None
        Name used in output column names; defaults to the model name made
        safe for column names.

    Attributes
    ----------
    output_dim : int
        Width of the embedding (the backbone's pooled feature size).

    Notes
    -----
    Images are preprocessed with the model's own data config (resize,
    center crop, normalisation), in evaluation mode. The model is built on
    first use, not in ``__init__``, and is dropped when the expert is
    pickled. On CUDA, inference runs under autocast (bfloat16 where
    supported), so embeddings differ slightly from those computed on CPU.

    Examples
    --------
    >>> import numpy as np
    >>> from medmix_sklearn.experts import ImageExpert
    >>> expert = ImageExpert("test_efficientnet", pretrained=False)
    >>> expert.output_dim
    256
    >>> image = expert.read(np.zeros((64, 64), dtype=np.uint8))
    >>> expert.embed([image]).shape
    (1, 256)
    """

    kind = "image"

    _parameter_constraints: dict = {
        "model": [str],
        "pretrained": ["boolean"],
        "checkpoint_path": [str, os.PathLike, None],
        "image_size": [Interval(Integral, 1, None, closed="left"), None],
        "name": [str, None],
    }

    def __init__(
        self, model, *, pretrained=True, checkpoint_path=None, image_size=None, name=None
    ):
        self.model = model
        self.pretrained = pretrained
        self.checkpoint_path = checkpoint_path
        self.image_size = image_size
        self.name = name

    # -- resolving the parameters ----------------------------------------------
    def _spec(self) -> _ImageSpec:
        self._validate_params()
        from .._layout import check_block_name

        check_block_name(self.name, what="expert name")
        model = os.fspath(self.model)
        preset = find_preset(model)
        if preset is not None and preset.kind != "image":
            raise ExpertNotFoundError(
                f"{model!r} is a {preset.kind} expert preset, not an image model. Use "
                f"TextExpert({model!r}) instead, or one of the image presets: "
                f"{', '.join(list_presets('image'))}."
            )
        if preset is not None:
            architecture = preset.architecture
        elif model.startswith(_HF_HUB_PREFIX):
            architecture = model
        else:
            timm = _timm()
            if not timm.is_model(model):
                raise ExpertNotFoundError(
                    not_found_message(
                        "image model",
                        model,
                        [*list_presets("image"), *timm.list_models()],
                        "Use a timm model name (timm.list_models()), an 'hf-hub:' id, "
                        "or an offline preset.",
                    )
                )
            architecture = model
        if self.checkpoint_path is not None:
            path = os.path.abspath(os.fspath(self.checkpoint_path))
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"checkpoint_path {os.fspath(self.checkpoint_path)!r} is not a file. "
                    "Pass the path of a saved state dict."
                )
            return _ImageSpec(architecture, "checkpoint", path, preset)
        if not self.pretrained:
            return _ImageSpec(architecture, "random", None, preset)
        if preset is not None:
            return _ImageSpec(architecture, "preset", preset.path(), preset)
        return _ImageSpec(architecture, "timm", None, None)

    def _data_config(self, spec: _ImageSpec, info: _ArchInfo) -> dict:
        config = dict(info.data_config)
        if spec.weights == "preset" and spec.preset is not None:
            config.update(spec.preset.data_config)
        return config

    # -- identity --------------------------------------------------------------
    def _fingerprint_parts(self) -> dict:
        spec = self._spec()
        info = _arch_info(spec.architecture, self.image_size)
        if spec.weights in ("checkpoint", "preset"):
            weights = f"sha256:{file_sha256(spec.weights_path)}"
        elif spec.weights == "random":
            import timm
            import torch

            weights = (
                f"random-init:{_RANDOM_INIT_SCHEME}:seed={_RANDOM_INIT_SEED}:timm={timm.__version__}"
                f":torch={torch.__version__}"
            )
        else:
            import timm

            weights = f"timm-pretrained:{info.pretrained_source}:timm={timm.__version__}"
        return {
            "model": os.fspath(self.model),
            "architecture": spec.architecture,
            "weights": weights,
            "preprocessing": sorted(self._data_config(spec, info).items()),
        }

    @property
    def output_dim(self) -> int:
        """Width of the embedding; found without loading weights."""
        spec = self._spec()
        return _arch_info(spec.architecture, self.image_size).output_dim

    # -- items -------------------------------------------------------------------
    def content_key(self, item) -> str:
        """Hex digest of the image's content (file bytes, array or pixels)."""
        return image_content_key(item)

    def read(self, item):
        """Decode a path, bytes, array or PIL image into an RGB PIL image."""
        return load_image(item)

    def preprocess(self, decoded):
        """Resize, crop and normalise a decoded image into the model's input tensor."""
        return self._transform()(decoded)

    def _transform(self):
        # Built from the data config alone, so no weights are needed; cached
        # per instance (and dropped with the model on pickling).
        transform = self.__dict__.get("_input_transform")
        if transform is None:
            from timm.data import create_transform

            spec = self._spec()
            info = _arch_info(spec.architecture, self.image_size)
            transform = create_transform(**self._data_config(spec, info), is_training=False)
            self.__dict__["_input_transform"] = transform
        return transform

    # -- model -------------------------------------------------------------------
    def _load(self, device: str) -> _LoadedImageModel:
        import torch

        timm = _timm()
        spec = self._spec()
        info = _arch_info(spec.architecture, self.image_size)
        kwargs = dict(info.create_kwargs, num_classes=0)
        if spec.weights == "timm":
            try:
                module = timm.create_model(spec.architecture, pretrained=True, **kwargs)
            except Exception as exc:
                raise OSError(
                    f"Cannot get timm's pretrained weights for {os.fspath(self.model)!r}: "
                    f"{exc}. They are downloaded from the Hugging Face Hub, which fails "
                    "offline. Pass checkpoint_path= with a saved state dict, use an "
                    f"offline preset ({', '.join(list_presets('image'))}), or "
                    "pretrained=False for random weights."
                ) from exc
        else:
            with _isolated_global_rng():
                module = timm.create_model(spec.architecture, pretrained=False, **kwargs)
            _init_weights(module, torch.Generator().manual_seed(_RANDOM_INIT_SEED))
            if spec.weights == "checkpoint":
                _load_checkpoint(module, spec.weights_path, info.classifier)
            elif spec.weights == "preset":
                state = torch.load(spec.weights_path, map_location="cpu", weights_only=True)
                load_state_dict_in_order(
                    module,
                    state,
                    source=spec.weights_path,
                    drop_prefixes=spec.preset.drop_prefixes,
                )
        module.eval().requires_grad_(False)
        module = module.to(device)
        if torch.device(device).type == "cuda":
            module = module.to(memory_format=torch.channels_last)
        transform = self._transform()
        logger.debug("Loaded image expert %s (%s weights) on %s", self.name, spec.weights, device)
        return _LoadedImageModel(module, transform)

    def _embed(self, model: _LoadedImageModel, items: list, *, device: str, batch_size: int):
        import torch
        from PIL import Image

        on_cuda = torch.device(device).type == "cuda"
        outputs = []
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            tensors = [
                img if isinstance(img, torch.Tensor)
                else model.transform(img if isinstance(img, Image.Image) else load_image(img))
                for img in chunk
            ]
            batch = torch.stack(tensors)
            if on_cuda:
                batch = batch.pin_memory().to(device, non_blocking=True)
                batch = batch.contiguous(memory_format=torch.channels_last)
            else:
                batch = batch.to(device)
            with torch.inference_mode(), self.autocast(device):
                features = model.module(batch)
            outputs.append(features.float().cpu().numpy())
        return np.concatenate(outputs, axis=0)
