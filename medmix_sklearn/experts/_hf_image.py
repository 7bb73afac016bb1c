"""Hugging Face vision experts: ``AutoModel`` + ``AutoImageProcessor``, pooled."""

from __future__ import annotations

import logging
import os

import numpy as np
from sklearn.utils._param_validation import StrOptions

from ._base import BaseExpert
from ._hub import directory_hashes, resolve_directory
from ._io import image_content_key, load_image

__all__ = ["HFImageExpert"]

logger = logging.getLogger(__name__)

# Per process: facts of a model directory's config, keyed by the config file state.
_CONFIGS: dict[tuple[str, int, int], dict] = {}


def _config_facts(directory: str) -> dict:
    path = os.path.join(directory, "config.json")
    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size)
    facts = _CONFIGS.get(key)
    if facts is None:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(directory, local_files_only=True)
        width = None
        for attr in ("hidden_size", "embed_dim", "d_model"):
            value = getattr(config, attr, None)
            if isinstance(value, int):
                width = value
                break
        sizes = getattr(config, "hidden_sizes", None)
        if isinstance(sizes, (list, tuple)) and sizes:  # ConvNets: the last stage's width
            width = int(sizes[-1])
        facts = {"model_type": getattr(config, "model_type", ""), "width": width,
                 "patch_size": getattr(config, "patch_size", None)}
        _CONFIGS[key] = facts
    return facts


class _LoadedHFImageModel:
    def __init__(self, module, processor):
        self.module = module
        self.processor = processor


class HFImageExpert(BaseExpert):
    """A frozen Hugging Face vision model whose pooled features embed images.

    For vision transformers such as ViT, DINOv2 or RAD-DINO, and ConvNets
    with a Hugging Face implementation; the model's own image processor
    (``AutoImageProcessor``) preprocesses.

    Parameters
    ----------
    model : str or path-like
        A local model directory (``config.json``, weights, and
        ``preprocessor_config.json``) or a Hugging Face model id
        (``"microsoft/rad-dino"``). Hub ids are looked up in the local cache
        first and downloaded only when ``HF_HUB_OFFLINE`` is not set.
    pooling : {"cls", "mean", "pooler"}, default="cls"
        ``"cls"``: the first token's final state. ``"mean"``: the mean of the
        patch tokens' final states; the leading tokens that are not patches
        (the class token, DINOv2's register tokens, DeiT's distillation token)
        are left out, found as the tokens beyond the image's patch count. For
        a ConvNet, whose output is a feature map, ``"mean"`` averages over
        space and ``"cls"`` is refused. ``"pooler"``: the model's own
        ``pooler_output`` (DINOv2: the layer-normed class token).
    name : str, default=None
        Name used in output column names; defaults to the last part of the
        model id or directory, made safe for column names.

    Attributes
    ----------
    output_dim : int
        Width of the embedding (the model's hidden size), read from its
        config without loading weights.

    Examples
    --------
    >>> from medmix_sklearn.experts import HFImageExpert
    >>> expert = HFImageExpert("microsoft/rad-dino")  # doctest: +SKIP
    >>> expert.output_dim  # doctest: +SKIP
    768
    """

    kind = "image"

    _parameter_constraints: dict = {
        "model": [str, os.PathLike],
        "pooling": [StrOptions({"cls", "mean", "pooler"})],
        "name": [str, None],
    }

    def __init__(self, model, *, pooling="cls", name=None):
        self.model = model
        self.pooling = pooling
        self.name = name

    def _source(self) -> tuple[str, str]:
        self._validate_params()
        from .._layout import check_block_name

        check_block_name(self.name, what="expert name")
        return resolve_directory(
            os.fspath(self.model),
            what="vision model",
            hint="Pass a local model directory (config.json, weights, "
            "preprocessor_config.json) or a Hugging Face model id",
        )

    def _fingerprint_parts(self) -> dict:
        source, directory = self._source()
        return {"model": source, "files": directory_hashes(directory), "pooling": self.pooling}

    @property
    def output_dim(self) -> int:
        """The model's hidden size, read from its config (no weights loaded)."""
        _, directory = self._source()
        facts = _config_facts(directory)
        if facts["model_type"] in ("clip", "siglip", "blip"):
            raise ValueError(
                f"The model in {directory!r} is a {facts['model_type']} image-text model. "
                "Use CLIPImageExpert for its image tower."
            )
        if facts["width"] is None:
            raise ValueError(
                f"Cannot tell the feature width of the vision model in {directory!r}: its "
                "config has none of hidden_size, embed_dim, d_model, hidden_sizes."
            )
        return int(facts["width"])

    # -- items -------------------------------------------------------------------
    def content_key(self, item) -> str:
        """Hex digest of the image's content (file bytes, array or pixels)."""
        return image_content_key(item)

    def read(self, item):
        """Decode a path, bytes, array or PIL image into an RGB PIL image."""
        return load_image(item)

    def _processor(self):
        processor = self.__dict__.get("_input_transform")
        if processor is None:
            from transformers import AutoImageProcessor

            _, directory = self._source()
            processor = AutoImageProcessor.from_pretrained(directory, local_files_only=True)
            self.__dict__["_input_transform"] = processor
        return processor

    def preprocess(self, decoded):
        """The model's image processor: resize, crop and normalise into a tensor."""
        import torch

        if isinstance(decoded, torch.Tensor):
            return decoded
        image = decoded if not isinstance(decoded, np.ndarray) else load_image(decoded)
        pixels = self._processor()(images=[image], return_tensors="pt")["pixel_values"]
        return pixels[0]

    # -- model -------------------------------------------------------------------
    def _load(self, device: str) -> _LoadedHFImageModel:
        import torch
        from transformers import AutoModel

        _, directory = self._source()
        self.output_dim  # refuses image-text models before loading them  # noqa: B018
        module = AutoModel.from_pretrained(directory, local_files_only=True, dtype=torch.float32)
        module.eval().requires_grad_(False)
        logger.debug("Loaded vision expert %s from %s on %s", self.name, directory, device)
        return _LoadedHFImageModel(module.to(device), self._processor())

    def _pool(self, model: _LoadedHFImageModel, outputs, pixels):
        import torch

        if self.pooling == "pooler":
            pooled = getattr(outputs, "pooler_output", None)
            if pooled is None:
                raise ValueError(
                    f"The vision model {os.fspath(self.model)!r} has no pooler output. "
                    "Use pooling='cls' or 'mean'."
                )
            return pooled.flatten(1)
        hidden = outputs.last_hidden_state
        if hidden.ndim == 4:  # a ConvNet's feature map (B, C, H, W)
            if self.pooling == "cls":
                raise ValueError(
                    f"The vision model {os.fspath(self.model)!r} outputs a feature map, "
                    "which has no class token. Use pooling='mean' or 'pooler'."
                )
            return hidden.mean(dim=(2, 3))
        if self.pooling == "cls":
            return hidden[:, 0]
        patch = _config_facts(self._source()[1])["patch_size"]
        skip = 0
        if patch:
            ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)
            n_patches = (pixels.shape[-2] // ph) * (pixels.shape[-1] // pw)
            skip = max(0, hidden.shape[1] - n_patches)
        return hidden[:, skip:].mean(dim=1) if skip < hidden.shape[1] else torch.mean(hidden, 1)

    def _embed(self, model: _LoadedHFImageModel, items: list, *, device: str, batch_size: int):
        import torch

        outputs = []
        for start in range(0, len(items), batch_size):
            chunk = [self.preprocess(self.read(i) if not isinstance(i, torch.Tensor) else i)
                     for i in items[start : start + batch_size]]
            pixels = torch.stack(chunk).to(device)
            with torch.inference_mode(), self.autocast(device):
                result = model.module(pixel_values=pixels)
                pooled = self._pool(model, result, pixels)
            outputs.append(pooled.float().cpu().numpy())
        return np.concatenate(outputs, axis=0)
