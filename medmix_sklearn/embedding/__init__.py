"""Turning a multimodal DataFrame into the block layout, with an embedding cache."""

from ._cache import EmbeddingCache, resolve_cache_dir
from ._embedder import MultimodalExpertEmbedder

__all__ = ["EmbeddingCache", "MultimodalExpertEmbedder", "resolve_cache_dir"]
