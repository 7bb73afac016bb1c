"""The block layout contract shared by the embedder and the classifier.

Every output column of :class:`~medmix_sklearn.MultimodalExpertEmbedder` is named
``{modality}__{expert}__{k}`` (``k = 0 .. dim - 1``); a tabular modality uses
``{modality}__{feature}``; a training-only teacher block is prefixed with
``teacher__``. This module formats those names and parses them back into
blocks. It imports neither the experts nor the fusion network, so both sides
can depend on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

SEP = "__"
TEACHER = "teacher"
TABULAR_EXPERT = "tabular"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def check_block_name(name: str, *, what: str) -> str:
    """Return ``name`` if it can be part of a column name, else raise ValueError.

    Parameters
    ----------
    name : str
        A modality or expert name.
    what : str
        What the name is, for the error message (``"modality name"``).
    """
    if not isinstance(name, str) or not _NAME_RE.match(name) or SEP in name:
        raise ValueError(
            f"Invalid {what} {name!r}: expected a non-empty string of letters, "
            f"digits, '_', '.' or '-' that does not contain {SEP!r} and does not "
            "start with '_'."
        )
    if name.endswith("_"):
        raise ValueError(
            f"Invalid {what} {name!r}: it may not end with '_', because column "
            f"names join parts with {SEP!r}."
        )
    return name


def sanitize_name(text: str) -> str:
    """Turn a model name, path or column name into a valid block name.

    The last path component is kept (``"org/model"`` -> ``"model"``), any
    character outside letters, digits, ``_``, ``.`` and ``-`` becomes ``-``,
    runs of ``_`` shrink to one (so the result never holds ``__``), and
    leading ``_.-`` and trailing ``_`` are stripped; ``"expert"`` when
    nothing is left. The result passes :func:`check_block_name`.
    """
    text = str(text)
    if text.startswith("hf-hub:"):
        text = text[len("hf-hub:") :]
    text = text.rstrip("/\\")
    text = re.split(r"[/\\]", text)[-1] or "expert"
    text = re.sub(r"[^A-Za-z0-9_.\-]", "-", text)
    text = re.sub(r"_{2,}", "_", text)
    text = text.lstrip("_.-").rstrip("_")
    return text or "expert"


def expert_feature_names(modality: str, expert: str, dim: int, *, teacher: bool = False):
    """Column names of one expert's embedding block.

    Returns
    -------
    names : list of str
        ``[f"{modality}__{expert}__{k}" for k in range(dim)]``, prefixed with
        ``teacher__`` when ``teacher`` is true.
    """
    prefix = f"{TEACHER}{SEP}" if teacher else ""
    return [f"{prefix}{modality}{SEP}{expert}{SEP}{k}" for k in range(dim)]


def tabular_feature_names(modality: str, features, *, teacher: bool = False):
    """Column names of a tabular modality: ``{modality}__{feature}``."""
    prefix = f"{TEACHER}{SEP}" if teacher else ""
    return [f"{prefix}{modality}{SEP}{feature}" for feature in features]


@dataclass(frozen=True)
class Block:
    """A group of columns that is present or absent as a whole for a row.

    Attributes
    ----------
    modality : str
        The modality the block belongs to.
    expert : str
        The expert's name, or ``"tabular"`` for a tabular modality.
    columns : tuple of int
        Column indices of the block in the input matrix.
    teacher : bool
        Whether the block is a training-only teacher block.
    """

    modality: str
    expert: str
    columns: tuple = field(repr=False)
    teacher: bool = False

    @property
    def key(self) -> str:
        prefix = f"{TEACHER}{SEP}" if self.teacher else ""
        return f"{prefix}{self.modality}{SEP}{self.expert}"

    @property
    def dim(self) -> int:
        return len(self.columns)


def parse_feature_names(feature_names) -> list[Block]:
    """Group column names into blocks, in order of first appearance.

    ``{modality}__{expert}__{k}`` with an integer ``k`` is one column of an
    expert block; any other ``{modality}__{feature}`` is a column of that
    modality's tabular block; a name without ``__`` belongs to a modality of
    its own name (a plain table). A leading ``teacher__`` marks a teacher block.

    Parameters
    ----------
    feature_names : array-like of str
        Column names, as in ``feature_names_in_``.

    Returns
    -------
    blocks : list of Block
    """
    groups: dict[tuple, list[int]] = {}
    for index, name in enumerate(feature_names):
        name = str(name)
        teacher = False
        parts = name.split(SEP)
        if len(parts) >= 3 and parts[0] == TEACHER:
            teacher = True
            parts = parts[1:]
        if len(parts) >= 3 and parts[-1].isdigit():
            modality, expert = parts[0], SEP.join(parts[1:-1])
        elif len(parts) >= 2:
            modality, expert = parts[0], TABULAR_EXPERT
        else:
            modality, expert = name, TABULAR_EXPERT
        groups.setdefault((teacher, modality, expert), []).append(index)
    return [
        Block(modality=modality, expert=expert, columns=tuple(cols), teacher=teacher)
        for (teacher, modality, expert), cols in groups.items()
    ]


def strip_transformer_prefixes(feature_names) -> list[str]:
    """Remove the transformer-name prefix a ColumnTransformer puts before layout names.

    ``ColumnTransformer([("mm", embedder, ...)])`` names the embedder's
    columns ``mm__{modality}__{expert}__{k}`` and ``mm__{modality}__{feature}``;
    read as they are, every modality would become one modality ``mm``. Names
    are grouped by their first part; a group (other than ``teacher``) is taken
    as prefixed when each of its names still has a ``{modality}__...`` layout
    after the prefix goes, and either one of them is an expert column with the
    prefix (four or more parts, the last an integer) or none is an expert
    column without it (three parts, the last an integer). Other names are
    returned unchanged.

    Parameters
    ----------
    feature_names : array-like of str

    Returns
    -------
    names : list of str
    """
    names = [str(n) for n in feature_names]
    groups: dict[str, list[list[str]]] = {}
    for name in names:
        parts = name.split(SEP)
        groups.setdefault(parts[0], []).append(parts)
    prefixed = set()
    for first, members in groups.items():
        if first == TEACHER or any(len(parts) < 3 for parts in members):
            continue
        with_prefix = any(len(parts) >= 4 and parts[-1].isdigit() for parts in members)
        genuine = any(len(parts) == 3 and parts[-1].isdigit() for parts in members)
        if with_prefix or not genuine:
            prefixed.add(first)
    return [
        name.split(SEP, 1)[1] if name.split(SEP, 1)[0] in prefixed else name for name in names
    ]


def check_blocks(blocks, n_features: int) -> list[Block]:
    """Check a sequence of :class:`Block` (such as the embedder's ``blocks_``) against X.

    Raises
    ------
    ValueError
        If an item is not a Block, an index is out of range or claimed twice,
        or a column is unclaimed.
    """
    out = []
    for i, block in enumerate(blocks):
        if not isinstance(block, Block):
            raise ValueError(
                "blocks must be a dict {modality: column indices} or a list of Block "
                f"objects (such as a fitted embedder's blocks_); item {i} is {block!r}."
            )
        out.append(block)
    mapping: dict[str, dict[str, tuple]] = {}
    for block in out:
        key = f"{TEACHER}{SEP}{block.modality}" if block.teacher else block.modality
        mapping.setdefault(key, {})[block.expert] = block.columns
    blocks_from_mapping(mapping, n_features)  # the same index checks
    return out


def blocks_from_mapping(blocks, n_features: int) -> list[Block]:
    """Build blocks from an explicit ``{modality: columns}`` mapping.

    Values are a sequence of column indices (one block, one expert) or a
    mapping ``{expert: column indices}``. Every column must belong to exactly
    one block.

    Raises
    ------
    ValueError
        If an index is out of range or claimed twice, or a column is unclaimed.
    """
    out: list[Block] = []
    owner: dict[int, str] = {}
    for modality, spec in blocks.items():
        teacher = False
        name = str(modality)
        if name.startswith(f"{TEACHER}{SEP}"):
            teacher, name = True, name[len(TEACHER) + len(SEP):]
        experts = spec.items() if isinstance(spec, dict) else [(TABULAR_EXPERT, spec)]
        for expert, columns in experts:
            cols = tuple(int(c) for c in np.asarray(columns).ravel())
            if not cols:
                raise ValueError(f"blocks[{modality!r}] names no columns.")
            for c in cols:
                if not 0 <= c < n_features:
                    raise ValueError(
                        f"blocks[{modality!r}] names column {c}, but X has "
                        f"{n_features} columns (valid indices 0..{n_features - 1})."
                    )
                if c in owner:
                    raise ValueError(
                        f"Column {c} is claimed by both {owner[c]!r} and {modality!r} in blocks."
                    )
                owner[c] = str(modality)
            out.append(Block(name, str(expert), cols, teacher))
    missing = sorted(set(range(n_features)) - set(owner))
    if missing:
        raise ValueError(
            f"blocks leaves columns {missing[:10]} unassigned; every column of X "
            "must belong to one modality."
        )
    return out
