"""Finding a Hugging Face model directory: a local folder, or a hub id in the local cache."""

from __future__ import annotations

import os

from ..exceptions import ExpertNotFoundError
from ._io import file_sha256
from ._registry import not_found_message

# Files whose bytes can change an embedding: configs, tokenizers, image processors.
HASHED_FILES = (
    "config.json",
    "preprocessor_config.json",
    "open_clip_config.json",
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
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".index.json", ".pth")
_WEIGHT_PREFIXES = ("model", "pytorch_model", "open_clip_model", "open_clip_pytorch_model")
HUB_PATTERNS = [
    *HASHED_FILES, "*.safetensors", "pytorch_model*.bin", "open_clip_pytorch_model*.bin",
    "*.index.json",
]


def offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` forbids downloads."""
    # Not huggingface_hub.constants.HF_HUB_OFFLINE (or is_offline_mode()): that is read
    # once, when huggingface_hub is imported, so setting HF_HUB_OFFLINE later (in a
    # notebook, or a test's monkeypatch) would be missed; this reads it at call time.
    return any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def weight_files(directory: str) -> list[str]:
    """Names of the weights files in a model directory, sorted."""
    return sorted(
        f
        for f in os.listdir(directory)
        if f.startswith(_WEIGHT_PREFIXES) and f.endswith(_WEIGHT_SUFFIXES)
    )


def directory_hashes(directory: str) -> list[tuple[str, str]]:
    """(name, sha256) of the weights and configuration files of a model directory.

    Raises ValueError when the directory holds no weights file.
    """
    weights = weight_files(directory)
    if not weights:
        raise ValueError(
            f"The model directory {directory!r} holds no weights file "
            "(model.safetensors, pytorch_model.bin or open_clip_model.safetensors)."
        )
    files = [f for f in HASHED_FILES if os.path.isfile(os.path.join(directory, f))]
    return [(f, file_sha256(os.path.join(directory, f))) for f in sorted(files + weights)]


def resolve_directory(
    model: str, *, what: str, hint: str, candidates=(), patterns=HUB_PATTERNS
) -> tuple[str, str]:
    """(source label for the fingerprint, local directory) of a model.

    A local directory is used as it is; a hub id is looked up in the local
    Hugging Face cache, and downloaded only when downloads are allowed.
    ``hint`` says what to pass instead, for the error messages.
    """
    if os.path.isdir(model):
        return "local-directory", os.path.abspath(model)
    if os.path.isabs(model) or model.startswith((".", "~")) or model.count("/") > 1:
        raise ExpertNotFoundError(f"{what.capitalize()} directory {model!r} does not exist. {hint}.")
    from huggingface_hub import snapshot_download

    try:
        return f"hub:{model}", snapshot_download(model, local_files_only=True)
    except Exception as local_exc:
        if offline():
            raise ExpertNotFoundError(
                not_found_message(
                    what,
                    model,
                    candidates,
                    f"It is not in the local Hugging Face cache and downloads are "
                    f"off (HF_HUB_OFFLINE is set). {hint} that is cached.",
                )
            ) from local_exc
    try:
        return f"hub:{model}", snapshot_download(model, allow_patterns=list(patterns))
    except Exception as exc:
        raise ExpertNotFoundError(
            not_found_message(what, model, candidates, f"{hint}. ({exc})")
        ) from exc
