"""Text experts: any Hugging Face encoder, pooled into one vector per text."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
from numbers import Integral

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from ..exceptions import ExpertNotFoundError, ItemReadError
from ._base import BaseExpert
from ._io import file_sha256
from ._registry import find_preset, list_presets, not_found_message

__all__ = ["TextExpert"]

logger = logging.getLogger(__name__)

# Files whose bytes determine the embedding: weights, model config, tokenizer.
_HASHED_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".index.json")
_WEIGHT_PREFIXES = ("model", "pytorch_model")
_HUB_PATTERNS = [*_HASHED_FILES, "*.safetensors", "pytorch_model*.bin", "*.index.json"]


@functools.cache
def _hidden_size(directory: str, mtime_ns: int, size: int) -> int:
    """Hidden size of a model directory, once per process and state of its config file."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(directory, local_files_only=True)
    for attr in ("hidden_size", "d_model", "dim", "hidden_dim"):
        value = getattr(config, attr, None)
        if isinstance(value, int):
            return value
    raise ValueError(
        f"Cannot tell the hidden size of the text model in {directory!r}: its "
        "config has none of hidden_size, d_model, dim, hidden_dim."
    )


def _offline() -> bool:
    # Not huggingface_hub.constants.HF_HUB_OFFLINE (or is_offline_mode()): that is read
    # once, when huggingface_hub is imported, so setting HF_HUB_OFFLINE later (in a
    # notebook, or a test's monkeypatch) would be missed; this reads it at call time.
    return any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _weight_files(directory: str) -> list[str]:
    return sorted(
        f
        for f in os.listdir(directory)
        if f.startswith(_WEIGHT_PREFIXES) and f.endswith(_WEIGHT_SUFFIXES)
    )


class _LoadedTextModel:
    def __init__(self, module, tokenizer, max_length: int):
        self.module = module
        self.tokenizer = tokenizer
        self.max_length = max_length


class TextExpert(BaseExpert):
    """A frozen Hugging Face encoder whose pooled token states embed texts.

    Parameters
    ----------
    model : str or path-like
        A Hugging Face model id (``"emilyalsentzer/Bio_ClinicalBERT"``), a
        local model directory, or an offline preset name (see
        :func:`~medmix_sklearn.experts.list_presets`), e.g.
        ``"all-MiniLM-L6-v2"``. Hub ids are looked up in the local cache first
        and downloaded only when ``HF_HUB_OFFLINE`` is not set.
    pooling : {"mean", "cls"}, default="mean"
        Mean of the token states over the attention mask, or the first
        (``[CLS]``) token's state.
    max_length : int, default=256
        Texts are truncated to this many tokens (and never beyond what the
        model's position embeddings allow).
    normalize : bool, default=False
        Scale each embedding to unit L2 norm.
    name : str, default=None
        Name used in output column names; defaults to the last part of the
        model id or directory, made safe for column names.

    Attributes
    ----------
    output_dim : int
        Width of the embedding (the model's hidden size).

    Notes
    -----
    Texts are sorted by length and batched so that each batch pads little;
    the output keeps the input order. On CUDA, inference runs under autocast.

    Examples
    --------
    >>> from medmix_sklearn.experts import TextExpert
    >>> expert = TextExpert("all-MiniLM-L6-v2")  # doctest: +SKIP
    >>> expert.embed([expert.read("No acute disease.")]).shape  # doctest: +SKIP
    (1, 384)
    """

    kind = "text"

    _parameter_constraints: dict = {
        "model": [str, os.PathLike],
        "pooling": [StrOptions({"mean", "cls"})],
        "max_length": [Interval(Integral, 1, None, closed="left")],
        "normalize": ["boolean"],
        "name": [str, None],
    }

    def __init__(self, model, *, pooling="mean", max_length=256, normalize=False, name=None):
        self.model = model
        self.pooling = pooling
        self.max_length = max_length
        self.normalize = normalize
        self.name = name

    # -- resolving the model ------------------------------------------------------
    def _source(self) -> tuple[str, str]:
        """(what identifies the source in the fingerprint, local model directory)."""
        self._validate_params()
        from .._layout import check_block_name

        check_block_name(self.name, what="expert name")
        model = os.fspath(self.model)
        preset = find_preset(model)
        if preset is not None:
            if preset.kind != "text":
                raise ExpertNotFoundError(
                    f"{model!r} is an {preset.kind} expert preset, not a text model. Use "
                    f"ImageExpert({model!r}) instead, or one of the text presets: "
                    f"{', '.join(list_presets('text'))}."
                )
            return f"preset:{preset.name}", preset.path()
        if os.path.isdir(model):
            return "local-directory", os.path.abspath(model)
        hint = (
            "Pass a local model directory, an offline preset "
            f"({', '.join(list_presets('text'))}), or a Hugging Face model id"
        )
        if os.path.isabs(model) or model.startswith((".", "~")) or model.count("/") > 1:
            raise ExpertNotFoundError(f"Text model directory {model!r} does not exist. {hint}.")
        from huggingface_hub import snapshot_download

        try:
            return f"hub:{model}", snapshot_download(model, local_files_only=True)
        except Exception as local_exc:
            if _offline():
                raise ExpertNotFoundError(
                    not_found_message(
                        "text model",
                        model,
                        list_presets("text"),
                        f"It is not in the local Hugging Face cache and downloads are "
                        f"off (HF_HUB_OFFLINE is set). {hint} that is cached.",
                    )
                ) from local_exc
        try:
            return f"hub:{model}", snapshot_download(model, allow_patterns=_HUB_PATTERNS)
        except Exception as exc:
            raise ExpertNotFoundError(
                not_found_message("text model", model, list_presets("text"), f"{hint}. ({exc})")
            ) from exc

    # -- identity -------------------------------------------------------------------
    def _fingerprint_parts(self) -> dict:
        source, directory = self._source()
        weights = _weight_files(directory)
        if not weights:
            raise ValueError(
                f"The text model directory {directory!r} holds no weights file "
                "(model.safetensors or pytorch_model.bin)."
            )
        files = [f for f in _HASHED_FILES if os.path.isfile(os.path.join(directory, f))]
        hashes = [(f, file_sha256(os.path.join(directory, f))) for f in sorted(files + weights)]
        return {
            "model": source,
            "files": hashes,
            "pooling": self.pooling,
            "max_length": int(self.max_length),
            "normalize": bool(self.normalize),
        }

    @property
    def output_dim(self) -> int:
        """The model's hidden size, read from its config (no weights loaded)."""
        _, directory = self._source()
        stat = os.stat(os.path.join(directory, "config.json"))
        return _hidden_size(directory, stat.st_mtime_ns, stat.st_size)

    # -- items ----------------------------------------------------------------------
    def read(self, item) -> str:
        """The text, stripped of surrounding whitespace."""
        if not isinstance(item, str):
            raise ItemReadError(
                f"Cannot read a text from an object of type {type(item).__name__} "
                f"({item!r:.80}): expected a str."
            )
        return item.strip()

    def content_key(self, item) -> str:
        """sha256 of the stripped text's UTF-8 bytes."""
        text = self.read(item)
        return hashlib.sha256(b"text\0" + text.encode("utf-8")).hexdigest()

    # -- model ----------------------------------------------------------------------
    def _load(self, device: str) -> _LoadedTextModel:
        import torch
        from transformers import AutoModel, AutoTokenizer

        _, directory = self._source()
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        module = AutoModel.from_pretrained(directory, local_files_only=True, dtype=torch.float32)
        module.eval().requires_grad_(False)
        module = module.to(device)
        limits = [int(self.max_length)]
        model_max = getattr(tokenizer, "model_max_length", None)
        if isinstance(model_max, int) and model_max < 1_000_000:
            limits.append(model_max)
        positions = getattr(module.config, "max_position_embeddings", None)
        if isinstance(positions, int) and positions > 0:
            limits.append(positions)
        logger.debug("Loaded text expert %s from %s on %s", self.name, directory, device)
        return _LoadedTextModel(module, tokenizer, min(limits))

    def _embed(self, model: _LoadedTextModel, items: list, *, device: str, batch_size: int):
        import torch

        # read() is idempotent on its own output and refuses a non-text (None,
        # NaN) instead of embedding its repr.
        texts = [self.read(t) for t in items]
        on_cuda = torch.device(device).type == "cuda"
        autocast = contextlib.nullcontext
        if on_cuda:
            amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

            def autocast():
                return torch.autocast(device_type="cuda", dtype=amp_dtype)

        # Longest first: similar lengths share a batch, and an out-of-memory
        # failure shows on the first batch rather than the last.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        # Sized from the first batch: self.output_dim would resolve the model
        # source (and read its config) again on every call.
        result = None
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            encoded = model.tokenizer(
                [texts[i] for i in index],
                padding=True,
                truncation=True,
                max_length=model.max_length,
                return_tensors="pt",
            )
            encoded = {k: v.to(device) for k, v in encoded.items()}
            with torch.inference_mode(), autocast():
                hidden = model.module(**encoded).last_hidden_state
            hidden = hidden.float()
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
            if self.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
            pooled = pooled.cpu().numpy()
            if result is None:
                result = np.empty((len(texts), pooled.shape[1]), dtype=np.float32)
            result[index] = pooled
        return result
