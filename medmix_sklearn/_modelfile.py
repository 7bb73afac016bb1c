"""A model file format that loads without running code from the file.

A model file is a zip archive:

- ``medmix.json``: the header (``format``, ``format_version``), the
  provenance (see :func:`~medmix_sklearn.describe_model`) and the estimator
  as a tree of JSON values;
- ``tensors.safetensors``: every torch tensor of the tree (the fusion
  network's weights and optimizer state, generator states), by name;
- ``arrays/{i}.npy``: every numeric numpy array (read with
  ``allow_pickle=False``);
- ``objects/{i}.skops``: other scikit-learn objects (fitted tabular
  transformers, an unfitted teacher estimator), in skops's format, read with
  skops's default trusted types plus those the caller names.

Reading builds only the classes of a fixed allow-list (this library's
estimators and experts, scikit-learn's ``Pipeline``) with ``cls.__new__``
and ``__setstate__``, from JSON values, arrays and tensors; a file cannot name
any other class, function or module to import. What cannot be written this
way (a fitted search object, a function inside a transformer, a pandas
object) fails at save time with an error that names it.
"""

from __future__ import annotations

import io
import json
import math
import pathlib
import zipfile
from typing import Any

import numpy as np

FORMAT = "medmix_sklearn.model"
FORMAT_VERSION = 2
HEADER = "medmix.json"
TENSORS = "tensors.safetensors"


def _allowed() -> dict[str, type]:
    from sklearn.pipeline import Pipeline

    from .embedding import MultimodalExpertEmbedder
    from .experts import ImageExpert, TextExpert
    from .fusion import MedMIXClassifier
    from .model_selection import SearchPipeline

    classes = (MedMIXClassifier, MultimodalExpertEmbedder, ImageExpert, TextExpert,
               Pipeline, SearchPipeline)
    return {f"{cls.__module__}.{cls.__qualname__}": cls for cls in classes}


class ModelFileError(ValueError):
    """A file is not a model file that can be read safely, or an object cannot be written to one."""


class _Writer:
    def __init__(self) -> None:
        self.allowed = {cls: name for name, cls in _allowed().items()}
        self.tensors: dict[str, Any] = {}
        self.files: dict[str, bytes] = {}

    def _file(self, folder: str, suffix: str, data: bytes) -> str:
        name = f"{folder}/{len([f for f in self.files if f.startswith(folder)])}{suffix}"
        self.files[name] = data
        return name

    def _tensor(self, tensor) -> str:
        key = f"t{len(self.tensors)}"
        self.tensors[key] = tensor.detach().to("cpu").contiguous().clone()
        return key

    def encode(self, value, where: str):
        import torch

        from ._layout import Block

        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {"t": "float", "v": repr(value)}
        if isinstance(value, np.generic):
            return {"t": "npscalar", "dtype": value.dtype.str, "v": self.encode(value.item(), where)}
        if isinstance(value, list):
            return {"t": "list", "v": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, tuple):
            return {"t": "tuple", "v": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, dict) and type(value) is dict:
            return {"t": "dict", "v": [[self.encode(k, where), self.encode(v, f"{where}[{k!r}]")]
                                       for k, v in value.items()]}
        if isinstance(value, range):
            return {"t": "range", "v": [value.start, value.stop, value.step]}
        if isinstance(value, slice):
            return {"t": "slice", "v": [self.encode(p, where) for p in (value.start, value.stop, value.step)]}
        if isinstance(value, pathlib.PurePath):
            return {"t": "path", "v": str(value)}
        if isinstance(value, np.ndarray):
            return self._array(value, where)
        if isinstance(value, torch.Tensor):
            return {"t": "tensor", "key": self._tensor(value)}
        if isinstance(value, torch.Generator):
            return {"t": "generator", "key": self._tensor(value.get_state())}
        if isinstance(value, Block):
            return {"t": "block", "v": [value.modality, value.expert, list(value.columns), value.teacher]}
        from skorch import NeuralNet

        if isinstance(value, NeuralNet):  # MedMIXClassifier.net_, rebuilt by the classifier
            return self._net(value, where)
        cls = self.allowed.get(type(value))
        if cls is not None:
            state = value.__getstate__()
            return {"t": "object", "class": cls,
                    "state": self.encode(dict(state), f"{where}.{type(value).__name__}")}
        return self._skops(value, where)

    def _array(self, value: np.ndarray, where: str):
        if value.dtype != object:
            buffer = io.BytesIO()
            np.save(buffer, value, allow_pickle=False)
            return {"t": "ndarray", "file": self._file("arrays", ".npy", buffer.getvalue())}
        items = [self.encode(v, where) for v in value.ravel().tolist()]
        if not all(item is None or isinstance(item, (str, int, float)) for item in items):
            raise ModelFileError(
                f"{where} is an object array holding {type(value.ravel()[0]).__name__} "
                "values; a model file holds object arrays of strings and numbers only."
            )
        return {"t": "objarray", "shape": list(value.shape), "v": items}

    def _net(self, net, where: str):
        state = {
            "module": {k: self._tensor(v) for k, v in net.module_.state_dict().items()},
            "optimizer": self.encode(net.optimizer_.state_dict(), f"{where}.optimizer_"),
            "history": self.encode([dict(row) for row in net.history], f"{where}.history"),
            "generator": self._tensor(net.generator_.get_state()),
        }
        return {"t": "fusion_net", "v": state}

    def _skops(self, value, where: str):
        try:
            import skops.io as sio
        except ImportError as exc:  # pragma: no cover - skops is a dependency
            raise ModelFileError(f"{where} needs skops to be saved: pip install skops.") from exc
        try:
            data = sio.dumps(value)
        except Exception as exc:
            raise ModelFileError(
                f"{where} ({type(value).__name__}) cannot be written to a model file, which "
                "holds this library's estimators, scikit-learn pipelines and objects that "
                f"skops can save ({type(exc).__name__}: {exc}). Save the fitted "
                "best_estimator_ of a search rather than the search, and use named "
                "scikit-learn transformers rather than functions."
            ) from exc
        return {"t": "skops", "file": self._file("objects", ".skops", data)}


def write_model_file(path: str, estimator, provenance: dict, *, compress: int = 3) -> None:
    """Write ``estimator`` and ``provenance`` to ``path`` in the format above."""
    from safetensors.torch import save as save_tensors

    writer = _Writer()
    tree = writer.encode(estimator, "estimator")
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "provenance": provenance,
        "estimator": tree,
    }
    level = int(compress)
    method = zipfile.ZIP_DEFLATED if level > 0 else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=method, compresslevel=level or None) as archive:
        archive.writestr(HEADER, json.dumps(header, default=_plain))
        archive.writestr(TENSORS, save_tensors(writer.tensors) if writer.tensors else b"")
        for name, data in writer.files.items():
            archive.writestr(name, data)


def _plain(value):
    """Provenance values as JSON types (numpy scalars and arrays; anything else as text)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def is_model_file(path: str) -> bool:
    """Whether ``path`` is a zip archive with a ``medmix.json`` header."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return HEADER in archive.namelist()


def read_header(path: str) -> dict:
    """The header of a model file (format, version, provenance, estimator tree)."""
    with zipfile.ZipFile(path) as archive:
        try:
            header = json.loads(archive.read(HEADER))
        except ValueError as exc:
            raise ModelFileError(f"{path!r}: its {HEADER} is not valid JSON ({exc}).") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFileError(f"{path!r} has a {HEADER} without the {FORMAT!r} header.")
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path!r} is a medmix model file of format version {version!r}, newer than "
            f"this library reads ({FORMAT_VERSION}). Upgrade medmix_sklearn."
        )
    return header


# scikit-learn internals that skops does not list as trusted although they hold
# only plain data: scikit-learn 1.5-1.6 keep a fitted ColumnTransformer's remainder
# columns in this list subclass (column indices, no code).
_SKLEARN_INTERNAL_TYPES = ("sklearn.compose._column_transformer._RemainderColsList",)


class _Reader:
    def __init__(self, archive: zipfile.ZipFile, path: str, trusted_types) -> None:
        from safetensors.torch import load as load_tensors

        self.archive = archive
        self.path = path
        self.trusted_types = list(trusted_types or [])
        self.allowed = _allowed()
        data = archive.read(TENSORS) if TENSORS in archive.namelist() else b""
        self.tensors = load_tensors(data) if data else {}

    def _bad(self, what: str) -> ModelFileError:
        return ModelFileError(f"{self.path!r} is not a valid medmix model file: {what}.")

    def decode(self, node):
        import torch

        from ._layout import Block

        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if not isinstance(node, dict) or "t" not in node:
            raise self._bad(f"unexpected node {str(node)[:80]!r}")
        kind = node["t"]
        if kind == "float":
            return float(node["v"])
        if kind == "npscalar":
            return np.dtype(node["dtype"]).type(self.decode(node["v"]))
        if kind == "list":
            return [self.decode(v) for v in node["v"]]
        if kind == "tuple":
            return tuple(self.decode(v) for v in node["v"])
        if kind == "dict":
            return {self.decode(k): self.decode(v) for k, v in node["v"]}
        if kind == "range":
            return range(*node["v"])
        if kind == "slice":
            return slice(*(self.decode(p) for p in node["v"]))
        if kind == "path":
            return pathlib.Path(node["v"])
        if kind == "ndarray":
            with self.archive.open(node["file"]) as fh:
                return np.load(io.BytesIO(fh.read()), allow_pickle=False)
        if kind == "objarray":
            values = [self.decode(v) for v in node["v"]]
            out = np.empty(len(values), dtype=object)
            out[:] = values
            return out.reshape(node["shape"])
        if kind == "tensor":
            return self.tensors[node["key"]]
        if kind == "generator":
            generator = torch.Generator()
            generator.set_state(self.tensors[node["key"]])
            return generator
        if kind == "block":
            modality, expert, columns, teacher = node["v"]
            return Block(str(modality), str(expert), tuple(int(c) for c in columns), bool(teacher))
        if kind == "object":
            return self._object(node)
        if kind == "skops":
            return self._skops(node)
        if kind == "fusion_net":
            return _PendingNet(node["v"], self)
        raise self._bad(f"unknown node type {kind!r}")

    def _object(self, node):
        name = node.get("class")
        cls = self.allowed.get(name)
        if cls is None:
            raise self._bad(
                f"it names class {name!r}, which is not one this library builds from a "
                f"model file ({', '.join(sorted(self.allowed))})"
            )
        state = self.decode(node["state"])
        if not isinstance(state, dict):
            raise self._bad(f"the state of {name} is not a mapping")
        pending = {k: v for k, v in state.items() if isinstance(v, _PendingNet)}
        obj = cls.__new__(cls)
        obj.__setstate__({k: v for k, v in state.items() if k not in pending})
        for key, net in pending.items():
            setattr(obj, key, net.build(obj))
        return obj

    def _skops(self, node):
        import skops.io as sio
        from skops.io.exceptions import UntrustedTypesFoundException

        data = self.archive.read(node["file"])
        try:
            return sio.loads(data, trusted=[*_SKLEARN_INTERNAL_TYPES, *self.trusted_types])
        except UntrustedTypesFoundException as exc:
            raise ModelFileError(
                f"{self.path!r} holds an object of types skops does not trust by default "
                f"({exc}). If you created the file yourself or fully trust its source, "
                "name the types you have reviewed: load_model(path, trusted_types=[...])."
            ) from exc


class _PendingNet:
    """A fusion net read from a file, built once its classifier's attributes are set."""

    def __init__(self, state: dict, reader: _Reader) -> None:
        self.state = state
        self.reader = reader

    def build(self, classifier):
        from skorch.history import History

        net = classifier._restore_net()
        tensors = self.reader.tensors
        net.module_.load_state_dict({k: tensors[v] for k, v in self.state["module"].items()})
        net.optimizer_.load_state_dict(self.reader.decode(self.state["optimizer"]))
        net.history = History(self.reader.decode(self.state["history"]))
        net.generator_.set_state(tensors[self.state["generator"]])
        return net


def read_model_file(path: str, *, trusted_types=None):
    """The estimator and header of a model file written by :func:`write_model_file`."""
    header = read_header(path)
    with zipfile.ZipFile(path) as archive:
        reader = _Reader(archive, path, trusted_types)
        estimator = reader.decode(header.get("estimator"))
    return estimator, header
