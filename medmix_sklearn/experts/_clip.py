"""CLIP-style experts: the image tower and the text tower of one model, each alone.

Two backends read such models:

* ``open_clip`` (extra ``clip``): a directory in open_clip's Hugging Face layout
  (``open_clip_config.json`` and ``open_clip_model.safetensors``, as
  BiomedCLIP is published), an ``"hf-hub:"`` id in the local Hugging Face
  cache, or an open_clip architecture name (``"ViT-B-32"``) with
  ``pretrained=`` a weights file, an open_clip tag (downloaded, so not
  offline) or None for a fixed-seed random initialisation;
* ``transformers``: a directory or hub id holding a ``CLIPModel``
  (``config.json`` with ``model_type`` ``"clip"``); the towers load through
  ``CLIPVisionModelWithProjection`` and ``CLIPTextModelWithProjection``.

The embedding is the tower's projected feature (the vector CLIP compares
across modalities), L2-normalised when ``normalize=True``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import numpy as np
from sklearn.utils._param_validation import StrOptions

from ..exceptions import ExpertNotFoundError, MissingExtraError
from ._base import BaseExpert, _init_weights, _isolated_global_rng
from ._hub import directory_hashes, resolve_directory
from ._io import file_sha256, image_content_key, load_image
from ._text import read_text, text_content_key

__all__ = ["CLIPImageExpert", "CLIPTextExpert"]

logger = logging.getLogger(__name__)

_RANDOM_INIT_SEED = 0
_HF_HUB_PREFIX = "hf-hub:"


def _open_clip():
    try:
        import open_clip
    except ImportError as exc:
        raise MissingExtraError(
            "This CLIP model needs open_clip, which is not installed. Install it with: "
            'pip install "medmix_sklearn[clip]"'
        ) from exc
    return open_clip


@dataclass(frozen=True)
class _ClipSource:
    backend: str  # "open_clip" or "transformers"
    label: str  # what identifies the source in the fingerprint
    directory: str | None  # a model directory, or None for an open_clip architecture
    architecture: str | None  # open_clip architecture name (no directory)
    weights: str  # "directory", "random", "file", "tag"
    weights_path: str | None

    @property
    def open_clip_name(self) -> str:
        return f"local-dir:{self.directory}" if self.directory else self.architecture


def _backend_of(directory: str) -> str | None:
    if os.path.isfile(os.path.join(directory, "open_clip_config.json")):
        return "open_clip"
    config = os.path.join(directory, "config.json")
    if os.path.isfile(config):
        try:
            with open(config, encoding="utf-8") as fh:
                model_type = json.load(fh).get("model_type")
        except (OSError, ValueError):
            model_type = None
        if model_type == "clip":
            return "transformers"
    return None


class _CLIPTower(BaseExpert):
    """What the two towers share: resolving the model, identity and loading."""

    tower = ""

    _parameter_constraints: dict = {
        "model": [str, os.PathLike],
        "backend": [StrOptions({"auto", "open_clip", "transformers"})],
        "pretrained": [str, os.PathLike, None],
        "normalize": ["boolean"],
        "name": [str, None],
    }

    def __init__(self, model, *, backend="auto", pretrained=None, normalize=False, name=None):
        self.model = model
        self.backend = backend
        self.pretrained = pretrained
        self.normalize = normalize
        self.name = name

    def _resolve(self) -> _ClipSource:
        self._validate_params()
        from .._layout import check_block_name

        check_block_name(self.name, what="expert name")
        model = os.fspath(self.model)
        hint = (
            "Pass a local directory holding an open_clip model (open_clip_config.json) or "
            "a transformers CLIPModel (config.json), an 'hf-hub:' id or a Hugging Face id "
            "in the local cache, or an open_clip architecture name"
        )
        if model.startswith(_HF_HUB_PREFIX):
            label, directory = resolve_directory(model[len(_HF_HUB_PREFIX):], what="CLIP model",
                                                 hint=hint)
            source = _ClipSource("open_clip", label, directory, None, "directory", None)
        elif not os.path.isdir(model) and self.backend != "transformers" and _is_architecture(
            model
        ):
            source = self._architecture_source(model)
        else:
            label, directory = resolve_directory(model, what="CLIP model", hint=hint)
            backend = _backend_of(directory)
            if backend is None:
                raise ExpertNotFoundError(
                    f"{model!r} ({directory}) holds neither an open_clip model "
                    "(open_clip_config.json) nor a transformers CLIPModel (config.json "
                    "with model_type 'clip'). For a vision-only model use HFImageExpert; "
                    "for a text encoder, TextExpert."
                )
            source = _ClipSource(backend, label, directory, None, "directory", None)
        if self.backend != "auto" and self.backend != source.backend:
            raise ValueError(
                f"backend={self.backend!r}, but {model!r} is a {source.backend} model. "
                f"Pass backend='auto' or backend={source.backend!r}."
            )
        if self.pretrained is not None and source.architecture is None:
            raise ValueError(
                f"pretrained={self.pretrained!r} applies to an open_clip architecture name "
                f"only; {model!r} is a model directory with its own weights. Leave "
                "pretrained=None."
            )
        return source

    def _architecture_source(self, architecture: str) -> _ClipSource:
        pretrained = self.pretrained
        if pretrained is None:
            return _ClipSource("open_clip", f"open_clip:{architecture}", None, architecture,
                               "random", None)
        pretrained = os.fspath(pretrained)
        if os.path.isfile(pretrained):
            return _ClipSource("open_clip", f"open_clip:{architecture}", None, architecture,
                               "file", os.path.abspath(pretrained))
        open_clip = _open_clip()
        if open_clip.get_pretrained_cfg(architecture, pretrained):
            return _ClipSource("open_clip", f"open_clip:{architecture}", None, architecture,
                               "tag", pretrained)
        raise ValueError(
            f"pretrained={pretrained!r} is neither a weights file nor an open_clip tag of "
            f"{architecture!r} (tags: {open_clip.list_pretrained_tags_by_model(architecture)})."
        )

    def _fingerprint_parts(self) -> dict:
        source = self._resolve()
        if source.weights == "directory":
            weights = directory_hashes(source.directory)
        elif source.weights == "file":
            weights = f"sha256:{file_sha256(source.weights_path)}"
        elif source.weights == "tag":
            weights = f"open_clip-tag:{source.weights_path}:{_open_clip().__version__}"
        else:
            import torch

            weights = (f"random-init:generator:seed={_RANDOM_INIT_SEED}:open_clip="
                       f"{_open_clip().__version__}:torch={torch.__version__}")
        return {
            "model": source.label,
            "backend": source.backend,
            "tower": self.tower,
            "weights": weights,
            "normalize": bool(self.normalize),
        }

    @property
    def output_dim(self) -> int:
        """Width of the shared image-text space (the projection), from the config."""
        return self._projection_dim()

    def _projection_dim(self) -> int:
        source = self._resolve()
        if source.backend == "transformers":
            with open(os.path.join(source.directory, "config.json"), encoding="utf-8") as fh:
                config = json.load(fh)
            return int(config.get("projection_dim", 512))
        if source.directory is not None:
            with open(os.path.join(source.directory, "open_clip_config.json"),
                      encoding="utf-8") as fh:
                config = json.load(fh)
            return int(config.get("model_cfg", config)["embed_dim"])
        return int(_open_clip().get_model_config(source.architecture)["embed_dim"])

    def _open_clip_model(self, source: _ClipSource, device: str):
        import torch

        open_clip = _open_clip()
        pretrained = source.weights_path if source.weights in ("file", "tag") else None
        try:
            with _isolated_global_rng():
                model = open_clip.create_model(
                    source.open_clip_name, pretrained=pretrained, device=device,
                    pretrained_text=False, pretrained_image=False,
                )
        except Exception as exc:
            if source.weights == "tag":
                raise OSError(
                    f"Cannot get open_clip's {pretrained!r} weights for "
                    f"{source.architecture!r}: {exc}. They are downloaded, which fails "
                    "offline. Pass pretrained= a weights file or a local model directory."
                ) from exc
            raise
        if source.weights == "random":
            # open_clip drew the random weights from the process-wide generator;
            # draw them again from one no other thread touches.
            _init_weights(model, torch.Generator().manual_seed(_RANDOM_INIT_SEED))
        return model.eval().requires_grad_(False)

    def _finish(self, features) -> np.ndarray:
        import torch

        features = features.float()
        if self.normalize:
            features = torch.nn.functional.normalize(features, p=2.0, dim=-1)
        return features.cpu().numpy()


def _load_transformers_clip(directory: str):
    """The whole CLIPModel; the caller keeps one tower and drops the rest."""
    import torch
    from transformers import CLIPModel

    return CLIPModel.from_pretrained(directory, local_files_only=True, dtype=torch.float32)


def _projected_tower():
    import torch

    class Projected(torch.nn.Module):
        """One tower of a transformers CLIPModel and its projection into the shared space."""

        def __init__(self, encoder, projection):
            super().__init__()
            self.encoder = encoder
            self.projection = projection

        def forward(self, **inputs):
            return self.projection(self.encoder(**inputs).pooler_output)

    return Projected


def _Projected(encoder, projection):
    return _projected_tower()(encoder, projection)


def _is_architecture(name: str) -> bool:
    if "/" in name or os.sep in name:
        return False
    try:
        open_clip = _open_clip()
    except MissingExtraError:
        return False
    return name in open_clip.list_models()


class CLIPImageExpert(_CLIPTower):
    """The image tower of a CLIP-style model (BiomedCLIP, PubMedCLIP, ...), alone.

    Parameters
    ----------
    model : str or path-like
        A local model directory (open_clip layout or a transformers
        ``CLIPModel``), an ``"hf-hub:"`` id (open_clip), a Hugging Face id in
        the local cache, or an open_clip architecture name.
    backend : {"auto", "open_clip", "transformers"}, default="auto"
        Which library reads the model; ``"auto"`` tells from its files.
    pretrained : str or path-like, default=None
        For an open_clip architecture name only: a weights file, an open_clip
        tag (downloaded: not offline), or None for a fixed-seed random
        initialisation.
    normalize : bool, default=False
        Scale each embedding to unit L2 norm (as CLIP does before comparing).
    name : str, default=None
        Name used in output column names; defaults to the last part of the
        model id or directory, made safe for column names.

    Attributes
    ----------
    output_dim : int
        Width of the shared image-text space.

    Notes
    -----
    Images are preprocessed by the model's own transform (open_clip's
    preprocessing config, or the transformers ``CLIPImageProcessor``). Only
    the image tower is kept in memory.

    Examples
    --------
    >>> from medmix_sklearn.experts import CLIPImageExpert
    >>> expert = CLIPImageExpert(
    ...     "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
    ... )  # doctest: +SKIP
    >>> expert.output_dim  # doctest: +SKIP
    512
    """

    kind = "image"
    tower = "image"

    @property
    def output_dim(self) -> int:
        """Width of the shared image-text space (the projection), from the config."""
        return self._projection_dim()

    def content_key(self, item) -> str:
        """Hex digest of the image's content (file bytes, array or pixels)."""
        return image_content_key(item)

    def read(self, item):
        """Decode a path, bytes, array or PIL image into an RGB PIL image."""
        return load_image(item)

    def _transform(self):
        transform = self.__dict__.get("_input_transform")
        if transform is None:
            source = self._resolve()
            if source.backend == "transformers":
                from transformers import AutoImageProcessor

                processor = AutoImageProcessor.from_pretrained(source.directory,
                                                               local_files_only=True)

                def transform(image, _processor=processor):
                    return _processor(images=[image], return_tensors="pt")["pixel_values"][0]
            else:
                transform = self._open_clip_transform(source)
            self.__dict__["_input_transform"] = transform
        return transform

    def _open_clip_transform(self, source: _ClipSource):
        open_clip = _open_clip()
        from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

        if source.directory is not None:
            with open(os.path.join(source.directory, "open_clip_config.json"),
                      encoding="utf-8") as fh:
                config = json.load(fh)
            model_cfg = config.get("model_cfg", config)
            overlay = dict(config.get("preprocess_cfg", {}))
        else:
            model_cfg = open_clip.get_model_config(source.architecture)
            overlay = {}
            if source.weights == "tag":
                overlay = dict(open_clip.get_pretrained_cfg(source.architecture,
                                                            source.weights_path))
        overlay.setdefault("size", model_cfg["vision_cfg"].get("image_size", 224))
        cfg = merge_preprocess_dict(PreprocessCfg(), overlay)
        return image_transform_v2(PreprocessCfg(**cfg), is_train=False)

    def preprocess(self, decoded):
        """The model's own image transform, into a tensor."""
        import torch

        if isinstance(decoded, torch.Tensor):
            return decoded
        return self._transform()(load_image(decoded))

    def _load(self, device: str):
        source = self._resolve()
        if source.backend == "transformers":
            whole = _load_transformers_clip(source.directory)
            tower = _Projected(whole.vision_model, whole.visual_projection)
            return tower.eval().requires_grad_(False).to(device)
        model = self._open_clip_model(source, device)
        return model.visual  # the text tower is dropped with the rest of the model

    def _embed(self, model, items: list, *, device: str, batch_size: int) -> np.ndarray:
        import torch

        source = self._resolve()
        outputs = []
        for start in range(0, len(items), batch_size):
            batch = torch.stack([self.preprocess(i) for i in items[start : start + batch_size]])
            batch = batch.to(device)
            with torch.inference_mode(), self.autocast(device):
                if source.backend == "transformers":
                    features = model(pixel_values=batch)
                else:
                    features = model(batch)
            outputs.append(self._finish(features))
        return np.concatenate(outputs, axis=0)


class CLIPTextExpert(_CLIPTower):
    """The text tower of a CLIP-style model, alone.

    Parameters
    ----------
    model : str or path-like
        As for :class:`CLIPImageExpert`.
    backend : {"auto", "open_clip", "transformers"}, default="auto"
        Which library reads the model; ``"auto"`` tells from its files.
    pretrained : str or path-like, default=None
        For an open_clip architecture name only; see :class:`CLIPImageExpert`.
    normalize : bool, default=False
        Scale each embedding to unit L2 norm.
    name : str, default=None
        Name used in output column names.

    Attributes
    ----------
    output_dim : int
        Width of the shared image-text space.

    Notes
    -----
    Texts are truncated to the model's context length (77 tokens for OpenAI
    CLIP, 256 for BiomedCLIP). Only the text tower is kept in memory.

    Examples
    --------
    >>> from medmix_sklearn.experts import CLIPTextExpert
    >>> expert = CLIPTextExpert(
    ...     "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
    ... )  # doctest: +SKIP
    >>> expert.embed([expert.read("No acute disease.")]).shape  # doctest: +SKIP
    (1, 512)
    """

    kind = "text"
    tower = "text"

    @property
    def output_dim(self) -> int:
        """Width of the shared image-text space (the projection), from the config."""
        return self._projection_dim()

    def read(self, item) -> str:
        """The text, stripped of surrounding whitespace."""
        return read_text(item)

    def content_key(self, item) -> str:
        """sha256 of the stripped text's UTF-8 bytes (as for TextExpert)."""
        return text_content_key(item)

    def _load(self, device: str):
        source = self._resolve()
        if source.backend == "transformers":
            from transformers import AutoTokenizer

            whole = _load_transformers_clip(source.directory)
            tower = _Projected(whole.text_model, whole.text_projection)
            tokenizer = AutoTokenizer.from_pretrained(source.directory, local_files_only=True)
            limit = int(whole.config.text_config.max_position_embeddings)
            return tower.eval().requires_grad_(False).to(device), tokenizer, limit
        model = self._open_clip_model(source, device)
        model.visual = None  # the image tower is not needed
        tokenizer = _open_clip().get_tokenizer(source.open_clip_name)
        limit = int(getattr(tokenizer, "context_length", 77) or 77)
        return model, tokenizer, limit

    def _embed(self, model, items: list, *, device: str, batch_size: int) -> np.ndarray:
        import torch

        module, tokenizer, limit = model
        source = self._resolve()
        texts = [self.read(t) for t in items]
        outputs = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            with torch.inference_mode(), self.autocast(device):
                if source.backend == "transformers":
                    encoded = tokenizer(chunk, padding=True, truncation=True,
                                        max_length=limit, return_tensors="pt")
                    encoded = {k: v.to(device) for k, v in encoded.items()
                               if k in ("input_ids", "attention_mask")}
                    features = module(**encoded)
                else:
                    tokens = tokenizer(chunk, context_length=limit)
                    features = module.encode_text(tokens.to(device))
            outputs.append(self._finish(features))
        return np.concatenate(outputs, axis=0)
