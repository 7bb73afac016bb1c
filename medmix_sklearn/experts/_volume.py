"""Volume experts: a 3-D backbone, or any 2-D image expert over slices (2.5-D)."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from numbers import Integral

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions

from ..exceptions import ExpertNotFoundError, ItemReadError
from ._base import BaseExpert, _init_weights, current_precision, sanitize_name
from ._io import file_sha256
from ._registry import Preset, find_preset, list_presets, not_found_message
from ._volume_io import Volume, read_volume, resample_volume, series_files, volume_content_key

__all__ = ["VolumeExpert", "CT_WINDOWS", "list_volume_architectures"]

logger = logging.getLogger(__name__)

_RANDOM_INIT_SEED = 0

#: Named CT windows, as (low, high) in Hounsfield units.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "wide": (-1000.0, 1000.0),
    "lung": (-1350.0, 150.0),
    "mediastinum": (-125.0, 225.0),
    "soft_tissue": (-160.0, 240.0),
    "bone": (-500.0, 1300.0),
    "brain": (0.0, 80.0),
}
_MR_PERCENTILES = (0.5, 99.5)
# Architecture names and output widths, without importing torch.
_ARCHITECTURE_DIMS = {"i3resnet18": 512, "i3resnet50": 2048, "i3resnet152": 2048, "test_i3resnet": 64}


def list_volume_architectures() -> list[str]:
    """Names of the 3-D architectures ``VolumeExpert`` builds (weights from a preset,
    a checkpoint, or a fixed-seed random initialisation)."""
    return sorted(_ARCHITECTURE_DIMS)


@dataclass(frozen=True)
class _VolumeSpec:
    form: str  # "2.5d" or "3d"
    architecture: str | None
    weights: str | None  # "random", "checkpoint", "preset"; None for 2.5-D
    weights_path: str | None
    preset: Preset | None
    spacing: tuple[float, float, float] | None
    window: tuple[float, float] | str  # CT: HU window or "dicom"; MR: percentiles
    input_shape: tuple[int, int, int] | None
    layout: str  # "spl" (z, y, x as read) or "ras" (z, x, y toward right, anterior)


def _triple(value, *, what: str, cast, positive: bool = True):
    try:
        values = tuple(cast(v) for v in value)
    except (TypeError, ValueError):
        values = ()
    ok = len(values) == 3 and all(np.isfinite(v) and (v > 0 or not positive) for v in values)
    if not ok:
        raise ValueError(
            f"{what} must be three positive numbers along (z, y, x). Got {value!r} instead."
        )
    return values


class VolumeExpert(BaseExpert):
    """A frozen expert that embeds 3-D images: CT or MRI volumes.

    Two forms:

    * **2.5-D**: ``VolumeExpert(ImageExpert("efficientnet_lite0"))``, or any
      other 2-D image expert. The volume is resampled and windowed,
      ``n_slices`` axial slices evenly spread over its depth are embedded by
      the 2-D expert, and the slice embeddings are pooled. Every 2-D
      foundation model is thereby also a volume expert.
    * **3-D backbone**: ``VolumeExpert("ct_i3resnet152_astra")`` (a preset
      with packaged weights) or a 3-D architecture name (see
      :func:`list_volume_architectures`) with ``checkpoint_path=`` or
      ``pretrained=False``. The resampled, windowed volume is padded or
      centre-cropped to ``input_shape`` and its globally pooled features are
      the embedding.

    Parameters
    ----------
    model : str or image expert
        A 2-D image expert (``ImageExpert``, ``HFImageExpert``,
        ``CLIPImageExpert``) for the 2.5-D form; a volume preset name (see
        :func:`~medmix_sklearn.experts.list_presets` with ``"volume"``) or a
        3-D architecture name for the 3-D form.
    modality : {"ct", "mr"}, default="ct"
        How intensities are scaled to ``0..1``: CT through a window in
        Hounsfield units; MRI, whose intensities have no absolute scale,
        through percentiles of each volume.
    spacing : tuple of 3 float, default=None
        Voxel size in mm along (z, y, x) that volumes are resampled to
        (trilinear). None keeps each volume's own spacing, except for a preset,
        which uses the spacing its weights were trained with.
    window : str or tuple of 2 float, default=None
        CT: ``(low, high)`` in HU, a named window (``"wide"``, ``"lung"``,
        ``"mediastinum"``, ``"soft_tissue"``, ``"bone"``, ``"brain"``; see
        :data:`CT_WINDOWS`), or ``"dicom"`` for the window stored in a DICOM
        series (``"wide"`` when it has none). None is the preset's window, else
        ``"wide"`` (-1000..1000 HU). MRI: ``(low, high)`` percentiles of the
        volume's foreground voxels (those above its minimum); None is
        (0.5, 99.5).
    n_slices : int, default=16
        2.5-D only: how many axial slices are embedded per volume.
    pooling : {"mean", "max", "mean_max"}, default="mean"
        2.5-D only: how slice embeddings are pooled; ``"mean_max"``
        concatenates both (twice the width).
    input_shape : tuple of 3 int, default=None
        3-D only: the (depth, height, width) volumes are padded (with the
        window's low end, 0 after scaling) or centre-cropped to. None is the
        preset's shape; for an architecture, each volume keeps its resampled
        shape (and is embedded alone).
    pretrained : bool, default=True
        3-D only: load the preset's packaged weights. With ``False`` the
        weights are a fixed-seed random initialisation; an architecture name
        without ``checkpoint_path`` needs ``False``.
    checkpoint_path : str or path-like, default=None
        3-D only: a state dict to load (by entry name; a common prefix such as
        ``"encode_image.i3_resnet."`` is found and stripped).
    name : str, default=None
        Name used in output column names; defaults to the 2-D expert's name
        with ``"-2.5d"`` appended, or the preset or architecture name.

    Attributes
    ----------
    output_dim : int
        Width of the embedding.

    Notes
    -----
    Volumes are read by :func:`~medmix_sklearn.experts.read_volume`: NIfTI
    files (needs nibabel, extra ``volumes``), folders holding one DICOM series
    (needs pydicom, extra ``dicom``; slices ordered by position, rescale slope
    and intercept applied), 3-D arrays in (z, y, x) patient axes with 1 mm
    voxels, and ``(array, spacing)`` tuples. Content keys hash file bytes (a
    series: its files' hashes, sorted), so a moved or renamed volume hits the
    embedding cache.

    The embedder runs ``read`` and ``preprocess`` ahead of the model for a
    whole batch; a 3-D preset's input is 160 x 224 x 224 floats (32 MB), so
    keep the embedder's ``batch_size`` small for volumes.

    Examples
    --------
    >>> import numpy as np
    >>> from medmix_sklearn.experts import ImageExpert, VolumeExpert
    >>> volume = np.full((24, 32, 32), -1000.0, dtype=np.float32)  # air, in HU
    >>> volume[8:16, 8:24, 8:24] = 40.0  # a block of soft tissue
    >>> slices = VolumeExpert(ImageExpert("test_efficientnet", pretrained=False), n_slices=4)
    >>> slices.embed([slices.read(volume)]).shape
    (1, 256)
    >>> backbone = VolumeExpert("test_i3resnet", pretrained=False)
    >>> backbone.embed([backbone.read(volume)]).shape
    (1, 64)
    """

    kind = "volume"

    _parameter_constraints: dict = {
        "model": [str, BaseExpert],
        "modality": [StrOptions({"ct", "mr"})],
        "spacing": ["array-like", None],
        "window": [str, "array-like", None],
        "n_slices": [Interval(Integral, 1, None, closed="left")],
        "pooling": [StrOptions({"mean", "max", "mean_max"})],
        "input_shape": ["array-like", None],
        "pretrained": ["boolean"],
        "checkpoint_path": [str, os.PathLike, None],
        "name": [str, None],
    }

    def __init__(
        self,
        model,
        *,
        modality="ct",
        spacing=None,
        window=None,
        n_slices=16,
        pooling="mean",
        input_shape=None,
        pretrained=True,
        checkpoint_path=None,
        name=None,
    ):
        self.model = model
        self.modality = modality
        self.spacing = spacing
        self.window = window
        self.n_slices = n_slices
        self.pooling = pooling
        self.input_shape = input_shape
        self.pretrained = pretrained
        self.checkpoint_path = checkpoint_path
        self.name = name

    # -- identity ---------------------------------------------------------------
    @property
    def name(self) -> str:
        """Name used in column names: the ``name`` parameter, or one derived from ``model``."""
        given = self.__dict__.get("_name")
        if given is not None:
            return given
        if isinstance(self.model, BaseExpert):
            return f"{self.model.name}-2.5d"
        return sanitize_name(os.fspath(self.model))

    @name.setter
    def name(self, value) -> None:
        self.__dict__["_name"] = value

    def _spec(self) -> _VolumeSpec:
        cached = self.__dict__.get("_input_transform")
        if cached is not None:
            return cached
        self._validate_params()
        from .._layout import check_block_name

        check_block_name(self.name, what="expert name")
        spacing = (
            None
            if self.spacing is None
            else _triple(self.spacing, what="spacing", cast=float)
        )
        input_shape = None
        if self.input_shape is not None:
            input_shape = _triple(self.input_shape, what="input_shape", cast=_as_int)
        if isinstance(self.model, BaseExpert):
            if self.model.kind != "image":
                raise ValueError(
                    f"VolumeExpert's 2.5-D form needs a 2-D image expert; got a "
                    f"{self.model.kind} expert ({type(self.model).__name__}). Pass an "
                    "ImageExpert, HFImageExpert or CLIPImageExpert, or a 3-D model name."
                )
            spec = _VolumeSpec(
                "2.5d", None, None, None, None, spacing,
                self._window(None), input_shape, "spl",
            )
        else:
            spec = self._spec_3d(spacing, input_shape)
        self.__dict__["_input_transform"] = spec
        return spec

    def _spec_3d(self, spacing, input_shape) -> _VolumeSpec:
        model = os.fspath(self.model)
        preset = find_preset(model)
        if preset is not None and preset.kind != "volume":
            raise ExpertNotFoundError(
                f"{model!r} is a {preset.kind} expert preset, not a volume model. Use "
                f"VolumeExpert(ImageExpert({model!r})) for a 2.5-D volume expert, or one "
                f"of the volume presets: {', '.join(list_presets('volume'))}."
            )
        if preset is None and model not in _ARCHITECTURE_DIMS:
            raise ExpertNotFoundError(
                not_found_message(
                    "volume model",
                    model,
                    [*list_presets("volume"), *_ARCHITECTURE_DIMS],
                    f"Use a volume preset ({', '.join(list_presets('volume'))}), a 3-D "
                    f"architecture ({', '.join(list_volume_architectures())}), or a 2-D "
                    "image expert for the 2.5-D form: VolumeExpert(ImageExpert(...)).",
                )
            )
        config = dict(preset.data_config) if preset is not None else {}
        architecture = preset.architecture if preset is not None else model
        if spacing is None and "spacing" in config:
            spacing = tuple(config["spacing"])
        if input_shape is None and "input_shape" in config:
            input_shape = tuple(config["input_shape"])
        window = self._window(config.get("window"))
        layout = config.get("layout", "spl")
        if self.checkpoint_path is not None:
            path = os.path.abspath(os.fspath(self.checkpoint_path))
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"checkpoint_path {os.fspath(self.checkpoint_path)!r} is not a file. "
                    "Pass the path of a saved state dict."
                )
            weights, weights_path = "checkpoint", path
        elif not self.pretrained:
            weights, weights_path = "random", None
        elif preset is not None:
            weights, weights_path = "preset", preset.path()
        else:
            raise ValueError(
                f"{model!r} is an architecture without packaged weights. Pass "
                "checkpoint_path= with a state dict, pretrained=False for random "
                f"weights, or a preset ({', '.join(list_presets('volume'))})."
            )
        return _VolumeSpec(
            "3d", architecture, weights, weights_path, preset, spacing, window,
            input_shape, layout,
        )

    def _window(self, preset_window):
        window = self.window
        if self.modality == "mr":
            if window is None:
                return _MR_PERCENTILES
            if isinstance(window, str):
                raise ValueError(
                    f"window={window!r} names a CT window in Hounsfield units, which "
                    "means nothing for MRI. For modality='mr' pass (low, high) "
                    "percentiles, e.g. (0.5, 99.5), or None."
                )
            low, high = _pair(window)
            if not 0.0 <= low < high <= 100.0:
                raise ValueError(
                    "For modality='mr', window is a pair of percentiles 0 <= low < high "
                    f"<= 100. Got {window!r} instead."
                )
            return (low, high)
        if window is None:
            return tuple(preset_window) if preset_window is not None else CT_WINDOWS["wide"]
        if isinstance(window, str):
            if window == "dicom":
                return "dicom"
            if window not in CT_WINDOWS:
                raise ValueError(
                    f"Unknown CT window {window!r}. Use one of {sorted(CT_WINDOWS)}, "
                    "'dicom', or (low, high) in HU."
                )
            return CT_WINDOWS[window]
        low, high = _pair(window)
        if not low < high:
            raise ValueError(f"window must be (low, high) with low < high. Got {window!r}.")
        return (low, high)

    def _fingerprint_parts(self) -> dict:
        spec = self._spec()
        parts = {
            "form": spec.form,
            "modality": self.modality,
            "spacing": spec.spacing,
            "window": spec.window,
        }
        if spec.form == "2.5d":
            parts.update(
                {
                    "slice_expert": type(self.model).__name__,
                    "n_slices": int(self.n_slices),
                    "pooling": self.pooling,
                }
            )
            return parts
        if spec.weights == "random":
            import torch

            weights = f"random-init:generator:seed={_RANDOM_INIT_SEED}:torch={torch.__version__}"
        else:
            weights = f"sha256:{file_sha256(spec.weights_path)}"
        parts.update(
            {
                "model": os.fspath(self.model),
                "architecture": spec.architecture,
                "weights": weights,
                "input_shape": spec.input_shape,
                "layout": spec.layout,
            }
        )
        return parts

    def fingerprint(self, device: str = "cpu", precision: str = "float32") -> str:
        """Hex digest identifying this expert's embeddings, for the cache.

        The 2.5-D form combines the volume preprocessing with the 2-D expert's
        own fingerprint (asked afresh, so a change to the 2-D expert shows).
        Never loads a model.

        Parameters
        ----------
        device : str, default="cpu"
            The torch device the embeddings are computed on.
        precision : {"float32", "autocast"}, default="float32"
            The precision asked of :meth:`embed`.
        """
        own = super().fingerprint(device, precision)
        if isinstance(self.model, BaseExpert):
            inner = self.model.fingerprint(device, precision)
            return hashlib.sha256(f"{own}\0{inner}".encode()).hexdigest()
        return own

    @property
    def output_dim(self) -> int:
        """Width of the embedding; found without loading weights."""
        spec = self._spec()
        if spec.form == "2.5d":
            factor = 2 if self.pooling == "mean_max" else 1
            return int(self.model.output_dim) * factor
        return _ARCHITECTURE_DIMS[spec.architecture]

    # -- items -------------------------------------------------------------------
    def content_key(self, item) -> str:
        """Hex digest of the volume's content (file bytes, series files, or array)."""
        return volume_content_key(item)

    def item_files(self, item):
        """The file, or a series folder's DICOM files, whose bytes make the content key.

        The embedder remembers the key by these files' identity, so a warm pass
        lists the folder and stats its slices instead of reading them. Arrays
        have no files (None).
        """
        if not isinstance(item, (str, os.PathLike)):
            return None
        path = os.fspath(item)
        if not isinstance(path, str) or not path.strip():
            return None
        if os.path.isdir(path):
            try:
                files = series_files(path)
            except ItemReadError:
                return None  # content_key raises the error that names the folder
            return tuple(files) or None
        return (path,)

    def read(self, item) -> Volume:
        """Decode a NIfTI file, DICOM series folder, array or ``(array, spacing)``."""
        return read_volume(item)

    def _scaled(self, volume: Volume, spec: _VolumeSpec) -> np.ndarray:
        """Resampled voxels scaled to 0..1 by the modality's window."""
        if spec.spacing is not None:
            volume = resample_volume(volume, spec.spacing)
        values = volume.array
        if self.modality == "mr":
            foreground = values[values > values.min()]
            if foreground.size == 0:
                return np.zeros_like(values)
            low, high = np.percentile(foreground, spec.window)
        elif spec.window == "dicom":
            low, high = volume.window or CT_WINDOWS["wide"]
        else:
            low, high = spec.window
        if not high > low:
            return np.zeros_like(values)
        scaled = (values - np.float32(low)) / np.float32(high - low)
        return np.clip(scaled, 0.0, 1.0, out=scaled).astype(np.float32, copy=False)

    def preprocess(self, decoded):
        """Resample, window and slice (2.5-D) or pad/crop (3-D) a decoded volume.

        Returns a tensor: ``(n_slices, 3, H, W)`` slice inputs of the 2-D
        expert, or ``(1, D, H, W)`` for a 3-D backbone.
        """
        import torch

        if isinstance(decoded, torch.Tensor):
            return decoded
        spec = self._spec()
        values = self._scaled(read_volume(decoded), spec)
        if spec.form == "2.5d":
            depth = values.shape[0]
            picks = [min(depth - 1, int((k + 0.5) * depth / self.n_slices))
                     for k in range(self.n_slices)]
            inner = self.model
            tensors = []
            for z in picks:
                pixels = np.rint(values[z] * 255.0).astype(np.uint8)
                tensors.append(inner.preprocess(inner.read(pixels)))
            return torch.stack([torch.as_tensor(t) for t in tensors])
        if spec.layout == "ras":
            # (S, P, L) -> (S, R, A): the axes the network was trained on.
            values = np.transpose(values[:, ::-1, ::-1], (0, 2, 1))
        if spec.input_shape is not None:
            values = _pad_or_crop(values, spec.input_shape)
        return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))[None]

    # -- model -------------------------------------------------------------------
    def _load(self, device: str):
        spec = self._spec()
        if spec.form == "2.5d":
            return self.model._get_model(device)
        import torch

        from ._resnet3d import build_resnet3d

        # Built on the meta device, so the constructor draws nothing from the
        # process-wide generator: the convolutions are drawn from a generator of
        # our own, the norm layers set to their constants (ones, zeros).
        with torch.device("meta"):
            module = build_resnet3d(spec.architecture)
        module = module.to_empty(device="cpu")
        for sub in module.modules():
            if isinstance(sub, torch.nn.modules.batchnorm._NormBase):
                sub.reset_parameters()
        _init_weights(module, torch.Generator().manual_seed(_RANDOM_INIT_SEED))
        if spec.weights in ("preset", "checkpoint"):
            _load_by_name(module, spec.weights_path)
        module.eval().requires_grad_(False)
        logger.debug("Loaded volume expert %s (%s weights) on %s", self.name, spec.weights, device)
        return module.to(device)

    def unload(self) -> None:
        """Free the loaded model (and the 2-D expert's); loaded again on the next ``embed``."""
        super().unload()
        model = self.__dict__.get("model")
        if isinstance(model, BaseExpert):
            model.unload()

    def _embed(self, model, items: list, *, device: str, batch_size: int) -> np.ndarray:
        import torch

        spec = self._spec()
        tensors = [self.preprocess(item) for item in items]
        if spec.form == "2.5d":
            counts = [t.shape[0] for t in tensors]
            flat = [s for t in tensors for s in t]
            slices = self.model.embed(
                flat, device=device, batch_size=batch_size, precision=current_precision()
            )
            out, start = [], 0
            for n in counts:
                block = slices[start : start + n]
                start += n
                if self.pooling == "mean":
                    out.append(block.mean(axis=0))
                elif self.pooling == "max":
                    out.append(block.max(axis=0))
                else:
                    out.append(np.concatenate([block.mean(axis=0), block.max(axis=0)]))
            return np.stack(out)
        # Volumes of one shape share a batch; others go alone.
        step = batch_size if spec.input_shape is not None else 1
        outputs = []
        for start in range(0, len(tensors), step):
            batch = torch.stack(tensors[start : start + step]).to(device)  # (B, 1, D, H, W)
            with torch.inference_mode(), self.autocast(device):
                outputs.append(model(batch).float().cpu().numpy())
        return np.concatenate(outputs, axis=0)


def _as_int(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (Integral, np.integer)):
        raise ValueError(f"not an integer: {value!r}")
    return int(value)


def _pair(window) -> tuple[float, float]:
    try:
        values = [float(v) for v in window]
    except (TypeError, ValueError):
        values = []
    if len(values) != 2 or not all(np.isfinite(values)):
        raise ValueError(f"window must be a pair (low, high) of numbers. Got {window!r}.")
    return values[0], values[1]


def _pad_or_crop(values: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Pad with zeros (symmetric, extra voxel at the end) or centre-crop to ``shape``."""
    pads = [(max(0, s - n) // 2, max(0, s - n) - max(0, s - n) // 2)
            for n, s in zip(values.shape, shape)]
    if any(p for pair in pads for p in pair):
        values = np.pad(values, pads, mode="constant", constant_values=0.0)
    starts = [n // 2 - s // 2 for n, s in zip(values.shape, shape)]
    return values[tuple(slice(b, b + s) for b, s in zip(starts, shape))]


def _load_by_name(module, path: str) -> None:
    """Load a state dict by entry names, stripping a common prefix and casting to float32."""
    import torch

    from ._image import _read_checkpoint

    state = _read_checkpoint(path)
    target = module.state_dict()
    anchor = next(iter(target))  # "conv1.weight"
    prefixes = sorted(
        {k[: -len(anchor)] for k in state if k.endswith(anchor)}, key=len
    )
    for prefix in prefixes:
        candidate = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if set(target) <= set(candidate):
            state = candidate
            break
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    bad_shapes = [
        (k, tuple(state[k].shape), tuple(v.shape))
        for k, v in target.items()
        if k in state and tuple(getattr(state[k], "shape", ())) != tuple(v.shape)
    ]
    if missing or bad_shapes:
        detail = (
            f"{len(missing)} entries missing (first: {missing[:3]})"
            if missing
            else f"entry {bad_shapes[0][0]!r} has shape {bad_shapes[0][1]}, the model's "
            f"{bad_shapes[0][2]}"
        )
        raise ValueError(
            f"Cannot load the weights in {path!r} into {type(module).__name__}: {detail}. "
            "The file is not for this architecture."
        )
    if unexpected:
        logger.debug("Ignoring %d entries of %s not in the model", len(unexpected), path)
    cast = {
        k: (v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
        for k, v in state.items()
        if k in target
    }
    module.load_state_dict(cast, strict=True)
