"""Text experts: any Hugging Face encoder, pooled into one vector per text."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from numbers import Integral

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from ..exceptions import ExpertNotFoundError, ItemReadError
from ._base import BaseExpert
from ._hub import directory_hashes, resolve_directory
from ._registry import find_preset, list_presets

__all__ = ["TextExpert"]

logger = logging.getLogger(__name__)

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


def read_text(item) -> str:
    """The text, stripped of surrounding whitespace; ItemReadError for a non-text."""
    if not isinstance(item, str):
        raise ItemReadError(
            f"Cannot read a text from an object of type {type(item).__name__} "
            f"({item!r:.80}): expected a str."
        )
    return item.strip()


def text_content_key(item) -> str:
    """sha256 of the stripped text's UTF-8 bytes."""
    text = read_text(item)
    return hashlib.sha256(b"text\0" + text.encode("utf-8")).hexdigest()


def text_content_keys(items: list) -> list:
    """``text_content_key`` of each item, or the ItemReadError it raises (a tight loop)."""
    sha256 = hashlib.sha256
    keys: list = []
    append = keys.append
    for item in items:
        if item.__class__ is str:
            append(sha256(b"text\0" + item.strip().encode("utf-8")).hexdigest())
        else:
            try:
                append(text_content_key(item))
            except ItemReadError as exc:
                append(exc)
    return keys


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
        hint = (
            "Pass a local model directory, an offline preset "
            f"({', '.join(list_presets('text'))}), or a Hugging Face model id"
        )
        return resolve_directory(
            model, what="text model", hint=hint, candidates=list_presets("text")
        )

    # -- identity -------------------------------------------------------------------
    def _fingerprint_parts(self) -> dict:
        source, directory = self._source()
        hashes = directory_hashes(directory)
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
        return read_text(item)

    def content_key(self, item) -> str:
        """sha256 of the stripped text's UTF-8 bytes."""
        return text_content_key(item)

    def content_keys(self, items: list) -> list:
        """:meth:`content_key` of each item (or its ItemReadError), in one tight loop."""
        if type(self).content_key is not TextExpert.content_key:
            return super().content_keys(items)  # a subclass keys texts its own way
        return text_content_keys(items)

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
            with torch.inference_mode(), self.autocast(device):
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
