"""The frozen-expert contract used by the embedder and the cache."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import inspect
import os
import threading
from abc import ABC, abstractmethod
from numbers import Integral
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from .._layout import sanitize_name
from ..exceptions import ItemReadError

# Bump when the embedding an expert returns for the same content could change
# (preprocessing, pooling, dtype): old cache entries then stop matching.
CACHE_FORMAT_VERSION = 1

#: Numeric precisions an expert can run at on CUDA (the CPU always runs float32).
PRECISIONS = ("float32", "autocast")

# The precision of the embed() call running in this thread, read by autocast():
# subclasses' _embed keep their signature.
_RUN_PRECISION: contextvars.ContextVar[str] = contextvars.ContextVar(
    "medmix_expert_precision", default="float32"
)


def current_precision() -> str:
    """The precision of the :meth:`BaseExpert.embed` call running in this thread."""
    return _RUN_PRECISION.get()


def check_precision(precision) -> str:
    """Return ``precision`` if it is one of :data:`PRECISIONS`, else raise ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {list(PRECISIONS)}: 'float32' runs CUDA in full float32, "
            f"'autocast' under autocast (bfloat16, or float16). Got {precision!r}."
        )
    return precision


class BaseExpert(BaseEstimator, ABC):
    """A frozen pretrained model that embeds one kind of item.

    Experts are stateless from scikit-learn's point of view: ``__init__`` only
    stores parameters, the model is loaded lazily on first need (``_load``), and
    pickling drops the loaded model so that it is re-loaded after unpickling.

    Subclasses implement ``kind``, ``name``, ``_fingerprint_parts``,
    ``output_dim``, ``content_key``, ``read``, ``_load`` and ``_embed``.
    """

    #: ``"image"`` or ``"text"``.
    kind: str = ""

    # -- identity -----------------------------------------------------------
    # ``name`` is both a constructor parameter (None by default) and the resolved
    # name used in column names; ``get_params`` reports it as given.
    @property
    def name(self) -> str:
        """Name used in column names: the ``name`` parameter, or one derived from ``model``."""
        given = self.__dict__.get("_name")
        return given if given is not None else sanitize_name(os.fspath(self.model))

    @name.setter
    def name(self, value) -> None:
        self.__dict__["_name"] = value

    def get_params(self, deep=True):
        """Constructor parameters; ``name`` is reported as given (None by default)."""
        params = super().get_params(deep=deep)
        params["name"] = self.__dict__.get("_name")
        return params

    def set_params(self, **params):
        """Set parameters; forgets the loaded model and the cached fingerprint."""
        super().set_params(**params)
        self._forget()
        return self

    def __setattr__(self, key: str, value) -> None:
        # A parameter assigned directly (``expert.image_size = 96``) must not keep
        # the model and fingerprint of the old value: the cache would file the new
        # embeddings under the old fingerprint. ``name`` only labels columns.
        super().__setattr__(key, value)
        if not key.startswith("_") and key != "name":
            self._forget()

    def _forget(self) -> None:
        """Drop everything derived from the parameters: model, fingerprint, transform."""
        self.unload()
        for key in ("_fingerprint_cache", "_input_transform"):
            self.__dict__.pop(key, None)

    @abstractmethod
    def _fingerprint_parts(self) -> dict:
        """What determines the embedding: model name, weights hash, preprocessing.

        Must not load the model.
        """

    def fingerprint(self, device: str = "cpu", precision: str = "float32") -> str:
        """Hex digest identifying this expert's embeddings, for the cache.

        Combines the model name, the weights (a hash of the weights files, or
        the seed or source of weights that are not read from a file), the
        preprocessing configuration, the device class and numeric precision
        (see :meth:`precision`) and :data:`CACHE_FORMAT_VERSION`. Embeddings
        computed at another precision (CUDA autocast vs CPU float32) differ in
        their last digits, so they never share cache entries. It never loads
        the model. It is remembered by the instance until a parameter changes;
        an unpickled expert computes it afresh.

        Parameters
        ----------
        device : str, default="cpu"
            The torch device the embeddings are computed on.
        precision : {"float32", "autocast"}, default="float32"
            The precision asked of :meth:`embed`.
        """
        precision = self.precision(device, precision)
        cache = self.__dict__.setdefault("_fingerprint_cache", {})
        cached = cache.get(precision)
        if cached is None:
            parts = dict(self._fingerprint_parts())
            parts["cache_format_version"] = CACHE_FORMAT_VERSION
            parts["class"] = type(self).__name__
            parts["precision"] = precision
            text = repr(sorted(parts.items()))
            cached = cache[precision] = hashlib.sha256(text.encode()).hexdigest()
        return cached

    def precision(self, device: str = "cpu", precision: str = "float32") -> str:
        """Device class and numeric precision of the embeddings on ``device``.

        ``"cpu:float32"`` on the CPU whatever is asked; on CUDA,
        ``"cuda:float32"`` for ``precision="float32"`` and
        ``"cuda:autocast-bfloat16"`` (or ``-float16`` where bfloat16 is
        unsupported) for ``precision="autocast"``. Part of :meth:`fingerprint`.
        """
        check_precision(precision)
        kind = str(device).split(":")[0]
        if kind != "cuda" or precision == "float32":
            return f"{kind}:float32"
        import torch

        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return f"cuda:autocast-{'bfloat16' if bf16 else 'float16'}"

    @property
    @abstractmethod
    def output_dim(self) -> int:
        """Embedding width; may build the architecture but not load weights."""

    # -- items --------------------------------------------------------------
    @abstractmethod
    def content_key(self, item: Any) -> str:
        """Hex digest of an item's content (file bytes, pixels, or text).

        The same content under two paths gives the same key. Raises
        :class:`~medmix_sklearn.exceptions.ItemReadError` if the item cannot
        be read.
        """

    def content_keys(self, items: list) -> list:
        """Content key of each item, or the ItemReadError it raises, in order.

        The default calls :meth:`content_key` item by item; an expert may hash a
        batch faster.

        Parameters
        ----------
        items : list

        Returns
        -------
        keys : list of str or ItemReadError
        """
        keys: list = []
        for item in items:
            try:
                keys.append(self.content_key(item))
            except ItemReadError as exc:
                keys.append(exc)
        return keys

    def item_files(self, item: Any):
        """The file(s) whose bytes make ``item``'s content key, or None.

        The embedder remembers the content key of such an item by the files'
        identity (path, size, times, inode), so a warm pass stats them instead
        of reading them (see ``trust_file_stat`` of the embedder). The default
        answers for an image path; an expert whose item is a folder of files
        (a DICOM series) returns the files in it. Return None for items that
        are not files (texts, arrays, bytes).
        """
        if self.kind == "image" and isinstance(item, (str, os.PathLike)):
            path = os.fspath(item)
            return (path,) if isinstance(path, str) and path.strip() else None
        return None

    @abstractmethod
    def read(self, item: Any) -> Any:
        """Decode an item into what ``_embed`` takes; raise ItemReadError on failure."""

    def preprocess(self, decoded: Any) -> Any:
        """Turn a decoded item into model input, without the model.

        The embedder runs ``read`` and ``preprocess`` on worker threads, ahead
        of the model, so heavy input work (resizing, normalising) overlaps
        with inference. The default returns ``decoded`` unchanged; ``_embed``
        must accept both forms.
        """
        return decoded

    # -- model --------------------------------------------------------------
    @abstractmethod
    def _load(self, device: str) -> Any:
        """Build the model in eval mode on ``device`` and return it."""

    def _get_model(self, device: str):
        model = self.__dict__.get("_model")
        if model is None or self.__dict__.get("_model_device") != device:
            model = self._load(device)
            self.__dict__["_model"] = model
            self.__dict__["_model_device"] = device
        return model

    def unload(self) -> None:
        """Free the loaded model; it is loaded again on the next ``embed``."""
        self.__dict__.pop("_model", None)
        self.__dict__.pop("_model_device", None)

    @property
    def is_loaded(self) -> bool:
        """Whether the model is currently loaded in this process."""
        return self.__dict__.get("_model") is not None

    def embed(
        self, items: list, *, device: str = "cpu", batch_size: int = 32, precision: str = "float32"
    ) -> np.ndarray:
        """Embed decoded items (the output of ``read``).

        Parameters
        ----------
        items : list
            Decoded (or preprocessed) items.
        device : str, default="cpu"
            The torch device to run the model on.
        batch_size : int, default=32
            Items per forward pass.
        precision : {"float32", "autocast"}, default="float32"
            On CUDA, ``"float32"`` runs the forward pass in full float32 with
            TF32 turned off for the call, so the embeddings match the CPU's to
            rounding; ``"autocast"`` runs it under autocast (bfloat16 where
            supported, else float16): faster where the model, not decoding,
            bounds the speed, with embeddings visibly off the CPU's. The CPU
            always runs float32.

        Returns
        -------
        embeddings : ndarray of shape (len(items), output_dim), dtype float32
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer. Got {batch_size!r} instead.")
        check_precision(precision)
        if len(items) == 0:
            return np.empty((0, self.output_dim), dtype=np.float32)
        model = self._get_model(device)
        token = _RUN_PRECISION.set(precision)
        try:
            with _without_tf32(device, precision):
                out = self._embed(model, items, device=device, batch_size=batch_size)
        finally:
            _RUN_PRECISION.reset(token)
        return np.asarray(out, dtype=np.float32)

    def autocast(self, device: str):
        """The context an expert's forward pass runs in on ``device``.

        Inside :meth:`embed`: on CUDA with ``precision="autocast"``, autocast to
        bfloat16 (float16 where bfloat16 is unsupported); otherwise no change
        (float32). ``_embed`` implementations wrap their forward pass in it, so
        the precision :meth:`fingerprint` names is the one they run at.
        """
        import torch

        if torch.device(device).type != "cuda" or _RUN_PRECISION.get() == "float32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast(device_type="cuda", dtype=dtype)

    @abstractmethod
    def _embed(self, model, items: list, *, device: str, batch_size: int) -> np.ndarray:
        """Embed one list of decoded items with a loaded model."""

    # -- pickling -----------------------------------------------------------
    def __getstate__(self):
        state = super().__getstate__()
        # The fingerprint is dropped too: the weights files it hashed may differ
        # where the expert is unpickled.
        for key in ("_model", "_model_device", "_input_transform", "_fingerprint_cache"):
            state.pop(key, None)
        return state


# Threads inside _without_tf32, and TF32 switches as they were before the first.
_TF32_LOCK = threading.Lock()
_TF32_STATE: dict = {"inside": 0, "saved": None}


@contextlib.contextmanager
def _without_tf32(device: str, precision: str):
    """Turn TF32 off for CUDA convolutions and matrix products while embedding in float32.

    cuDNN convolutions use TF32 by default (10-bit mantissa), which alone
    moves a CNN's embeddings by about 1e-3 relative. The switches are
    process-wide: they are turned off by the first thread to enter and
    restored by the last to leave, and other CUDA float32 work running
    meanwhile runs without TF32 too (slower, never less exact).
    """
    import torch

    if precision != "float32" or torch.device(device).type != "cuda":
        yield
        return
    with _TF32_LOCK:
        if _TF32_STATE["inside"] == 0:
            _TF32_STATE["saved"] = (torch.backends.cuda.matmul.allow_tf32,
                                    torch.backends.cudnn.allow_tf32)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        _TF32_STATE["inside"] += 1
    try:
        yield
    finally:
        with _TF32_LOCK:
            _TF32_STATE["inside"] -= 1
            if _TF32_STATE["inside"] == 0:
                (torch.backends.cuda.matmul.allow_tf32,
                 torch.backends.cudnn.allow_tf32) = _TF32_STATE["saved"]


# Random functions that take no ``generator`` keyword in their signature as
# Python sees it (tensor methods and torch builtins); the rest are found by signature.
_RANDOM_BUILTINS = (
    "Tensor.uniform_", "Tensor.normal_", "Tensor.bernoulli_", "Tensor.random_", "Tensor.exponential_",
    "Tensor.geometric_", "Tensor.log_normal_", "Tensor.cauchy_", "rand", "randn", "randint", "randperm",
    "normal", "bernoulli", "multinomial",
)


@functools.cache
def _random_builtins() -> frozenset:
    import torch

    return frozenset(getattr(torch.Tensor, n[len("Tensor."):]) if n.startswith("Tensor.") else getattr(torch, n)
                     for n in _RANDOM_BUILTINS)


@functools.cache
def _draws_randomly(func) -> bool:
    """Whether the torch function ``func`` takes a ``generator`` (so draws random numbers)."""
    if func in _random_builtins():
        return True
    try:
        return "generator" in inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False


@contextlib.contextmanager
def _isolated_global_rng():
    """Run a third-party model constructor (timm's, open_clip's) without touching torch's
    process-wide generator.

    Within the block, every torch call of this thread that draws random numbers
    (``nn.init.*``, ``Tensor.uniform_``, ``torch.randn``, ...) without a
    generator of its own draws from a private one instead, through a
    ``TorchFunctionMode``, which is thread-local: other threads, and their draws
    from the process-wide generator, are not affected. Constructors of our own
    build on the meta device and draw nothing (see ``VolumeExpert``). The
    weights drawn inside are thrown away anyway: :func:`_init_weights` draws
    them again from a generator of the expert's own.
    """
    import torch
    from torch.overrides import TorchFunctionMode

    private = torch.Generator().manual_seed(0)

    class _PrivateGenerator(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            if kwargs.get("generator") is None and _draws_randomly(func):
                kwargs["generator"] = private
            return func(*args, **kwargs)

    with _PrivateGenerator():
        yield


def _init_weights(module, generator) -> None:
    """Draw every randomly initialised parameter of ``module`` from ``generator``.

    Model constructors (timm's, open_clip's, ours) draw from torch's
    process-wide generator, which other threads may draw from or reseed at the
    same time; so every random expert draws its weights again here: convolutions and linear layers get torch's default
    initialisation (Kaiming-uniform), embeddings a standard normal. Norm layers
    and parameters whose values are all equal (constants such as layer-scale
    factors) keep their deterministic values; any other parameter gets a
    normal of standard deviation 0.02 (position embeddings, class tokens).
    """
    import math

    import torch
    from torch import nn

    def draw(tensor, init, **kwargs) -> None:
        values = torch.empty(tensor.shape, dtype=torch.float32)
        init(values, generator=generator, **kwargs)
        tensor.copy_(values)

    with torch.no_grad():
        for sub in module.modules():
            own = dict(sub.named_parameters(recurse=False))
            if isinstance(sub, (nn.Linear, nn.modules.conv._ConvNd)):
                weight = own.pop("weight")
                draw(weight, nn.init.kaiming_uniform_, a=math.sqrt(5))
                bias = own.pop("bias", None)
                if bias is not None:
                    fan_in = weight[0].numel()
                    bound = 1.0 / math.sqrt(fan_in) if fan_in else 0.0
                    draw(bias, nn.init.uniform_, a=-bound, b=bound)
            elif isinstance(sub, nn.Embedding):
                draw(own.pop("weight"), nn.init.normal_)
            elif isinstance(sub, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)):
                continue
            for param in own.values():
                if param.numel() > 1 and bool((param != param.reshape(-1)[0]).any()):
                    draw(param, nn.init.normal_, std=0.02)
