"""Turning a multimodal DataFrame into the block layout, with an embedding cache."""

from ._cache import (
    EmbeddingCache,
    FileIdentity,
    content_key_by_identity,
    file_identity,
    resolve_cache_dir,
)
from ._embedder import MultimodalExpertEmbedder

__all__ = [
    "EmbeddingCache",
    "FileIdentity",
    "MultimodalExpertEmbedder",
    "content_key_by_identity",
    "file_identity",
    "resolve_cache_dir",
]
