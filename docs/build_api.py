"""Write docs/api.md from the public names and docstrings of medmix_sklearn.

Run from the repository root::

    python docs/build_api.py            # rewrites docs/api.md
    python docs/build_api.py --check    # exit 1 if docs/api.md is out of date

The output is deterministic: modules in a fixed order, names in the order of
each module's ``__all__``, signatures from :func:`inspect.signature`, and
docstrings as written. ``tests/test_docs.py`` fails when docs/api.md differs
from what this script produces, so the reference cannot drift from the code.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
from pathlib import Path

API_PATH = Path(__file__).resolve().parent / "api.md"

# The package first, then its subpackages in the order a reader meets them.
MODULES = (
    "medmix_sklearn",
    "medmix_sklearn.embedding",
    "medmix_sklearn.experts",
    "medmix_sklearn.fusion",
    "medmix_sklearn.datasets",
    "medmix_sklearn.model_selection",
    "medmix_sklearn.report",
    "medmix_sklearn.exceptions",
)

# Methods every estimator inherits from scikit-learn; documented there.
_INHERITED_FROM_SKLEARN = "sklearn."
_MAX_SIGNATURE_LINE = 88


def _anchor(text: str) -> str:
    """GitHub-style anchor of a heading."""
    out = []
    for ch in text.strip().lower():
        if ch.isalnum() or ch in "-_":
            out.append(ch)
        elif ch == " ":
            out.append("-")
    return "".join(out)


def _format_signature(name: str, obj) -> str:
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return f"{name}(...)"
    params = [str(p) for p in signature.parameters.values()]
    # Keep keyword-only markers readable: inspect renders "*" itself.
    returns = ""
    if signature.return_annotation is not inspect.Signature.empty:
        annotation = signature.return_annotation
        returns = f" -> {annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)}"
    one_line = f"{name}({', '.join(params)}){returns}"
    if len(one_line) <= _MAX_SIGNATURE_LINE:
        return one_line
    body = "".join(f"    {p},\n" for p in params)
    return f"{name}(\n{body}){returns}"


def _doc(obj) -> str:
    doc = inspect.getdoc(obj)
    return doc.strip() if doc else "(no docstring)"


def _code(text: str, lang: str = "") -> str:
    return f"```{lang}\n{text}\n```\n"


def _own_members(cls) -> list[tuple[str, object]]:
    """Public methods and properties defined by ``cls`` or its medmix_sklearn bases."""
    members: dict[str, object] = {}
    for klass in reversed(cls.__mro__):
        module = getattr(klass, "__module__", "") or ""
        if not module.startswith("medmix_sklearn"):
            continue
        for attr, value in vars(klass).items():
            if attr.startswith("_"):
                continue
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            if inspect.isfunction(value) or isinstance(value, property):
                members[attr] = value
    return sorted(members.items())


def _render_class(qualified: str, cls) -> str:
    parts = [f"### `{qualified}`\n"]
    bases = [b for b in cls.__bases__ if b is not object]
    if bases:
        names = ", ".join(f"`{b.__module__}.{b.__qualname__}`" for b in bases)
        parts.append(f"Bases: {names}\n")
    parts.append(_code(_format_signature(f"class {cls.__name__}", cls), "python"))
    parts.append(_code(_doc(cls), "text"))
    if issubclass(cls, BaseException):
        return "\n".join(parts)
    for attr, member in _own_members(cls):
        if isinstance(member, property):
            parts.append(f"#### `{cls.__name__}.{attr}` (property)\n")
        else:
            parts.append(f"#### `{cls.__name__}.{attr}`\n")
            parts.append(_code(_format_signature(attr, member), "python"))
        parts.append(_code(_doc(member), "text"))
    return "\n".join(parts)


def _render_function(qualified: str, func) -> str:
    return "\n".join(
        [
            f"### `{qualified}`\n",
            _code(_format_signature(func.__name__, func), "python"),
            _code(_doc(func), "text"),
        ]
    )


def _render_constant(qualified: str, value) -> str:
    return "\n".join([f"### `{qualified}`\n", _code(f"{qualified.rsplit('.', 1)[-1]} = {value!r}", "python")])


def _homes() -> dict[int, str]:
    """Where each public object is documented: the first subpackage that exports it."""
    homes: dict[int, str] = {}
    for module_name in MODULES[1:]:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                homes.setdefault(id(obj), f"{module_name}.{name}")
    return homes


def build() -> str:
    """Return the text of docs/api.md."""
    homes = _homes()
    out = [
        "# API reference\n",
        "<!-- Generated by docs/build_api.py from the docstrings. Do not edit by hand: "
        "run `python docs/build_api.py`. -->\n",
        "Every public name of `medmix_sklearn` and its subpackages, with its signature and "
        "docstring. Parameters inherited from scikit-learn (`get_params`, `set_params`, "
        "`set_output`, `score`, ...) are documented by scikit-learn.\n",
        "## Contents\n",
    ]
    out.append("".join(f"- [`{m}`](#{_anchor(m)})\n" for m in MODULES))
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        out.append(f"## {module_name}\n")
        out.append(_doc(module) + "\n")
        for name in module.__all__:
            obj = getattr(module, name)
            qualified = f"{module_name}.{name}"
            home = homes.get(id(obj))
            if module_name == MODULES[0] and home is not None and home != qualified:
                out.append(f"- `{qualified}`: see [`{home}`](#{_anchor(home)}).\n")
            elif inspect.isclass(obj):
                out.append(_render_class(qualified, obj))
            elif callable(obj):
                out.append(_render_function(qualified, obj))
            else:
                out.append(_render_constant(qualified, obj))
    text = "\n".join(out)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.rstrip("\n") + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that docs/api.md is up to date")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    text = build()
    if args.check:
        current = API_PATH.read_text(encoding="utf-8") if API_PATH.exists() else ""
        if current != text:
            print(f"{API_PATH} is out of date; run: python docs/build_api.py", file=sys.stderr)
            return 1
        return 0
    API_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {API_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
