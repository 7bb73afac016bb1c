"""Sphinx helpers for the medmix_sklearn documentation.

- :func:`api_page` gives ``api.rst`` (written by conf.py) from the package's public names: every
  public subpackage or module (no leading underscore) must define ``__all__``,
  and every name in it gets an autosummary entry, so a new public name appears
  in the reference without editing a page. ``tests/test_docs.py`` checks that
  the page covers every public name.
- Names re-exported at the top level (``medmix_sklearn.MedMIXClassifier``) are
  documented once, where their subpackage exports them; a ``missing-reference``
  handler resolves the short and top-level spellings to that page.
- :class:`ResetArgv` gives each gallery example its quick-mode arguments.

This module imports no Sphinx at import time, so tests can use it.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

PACKAGE = "medmix_sklearn"
# Public modules that are not part of the Python API: the ``medmix`` command is
# documented on its own page (cli.md).
NOT_API = {"cli"}
# The order a reader meets the subpackages; any other public module follows, sorted.
ORDER = (
    "embedding",
    "experts",
    "fusion",
    "model_selection",
    "datasets",
    "report",
    "exceptions",
)


def public_modules(package: str = PACKAGE) -> list[str]:
    """Dotted names of the public subpackages and modules of ``package``, in reading order."""
    root = importlib.import_module(package)
    found = [
        info.name
        for info in pkgutil.iter_modules(root.__path__)
        if not info.name.startswith("_") and info.name not in NOT_API
    ]
    ranked = sorted(found, key=lambda name: (ORDER.index(name) if name in ORDER else len(ORDER), name))
    return [f"{package}.{name}" for name in ranked]


def public_names(module_name: str) -> list[str]:
    """The names of ``module_name.__all__``, dunder names (``__version__``) left out."""
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        raise RuntimeError(
            f"{module_name} is public (no leading underscore) but defines no __all__. "
            "Add __all__ listing its public names, or rename it with a leading underscore."
        )
    return [name for name in names if not (name.startswith("__") and name.endswith("__"))]


def top_level_aliases(package: str = PACKAGE) -> tuple[dict[str, str], list[str]]:
    """Top-level names documented under a subpackage, and those documented at the top.

    Returns ``({"medmix_sklearn.X": "medmix_sklearn.sub.X"}, [names only the top level exports])``.
    """
    root = importlib.import_module(package)
    owners = {}
    for module_name in public_modules(package):
        module = importlib.import_module(module_name)
        for name in public_names(module_name):
            owners.setdefault(id(getattr(module, name)), f"{module_name}.{name}")
    aliases, own = {}, []
    for name in public_names(package):
        target = owners.get(id(getattr(root, name)))
        if target is None:
            own.append(name)
        else:
            aliases[f"{package}.{name}"] = target
    return aliases, own


def _title(text: str, char: str) -> str:
    return f"{text}\n{char * len(text)}\n"


def _summary_line(module_name: str) -> str:
    doc = inspect.getdoc(importlib.import_module(module_name)) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _autosummary(module_name: str, names: list[str]) -> str:
    lines = [
        f".. currentmodule:: {module_name}",
        "",
        ".. autosummary::",
        "   :toctree: generated/",
        "   :nosignatures:",
        "",
    ]
    lines += [f"   {name}" for name in names]
    return "\n".join(lines) + "\n"


def api_page(package: str = PACKAGE) -> str:
    """The text of ``api.rst``: one section per public module, one entry per public name."""
    aliases, own = top_level_aliases(package)
    parts = [
        ".. This page is written by docs/sphinxext/medmix_docs.py at build time. Do not edit.",
        "",
        ".. _api:",
        "",
        _title("API reference", "="),
        f"Every public name of ``{package}``, grouped by the subpackage that exports it.",
        "Each subpackage's ``__all__`` is the list; the pages come from the docstrings.",
        "",
        _title(package, "-"),
        f".. automodule:: {package}",
        "   :no-members:",
        "",
    ]
    if aliases:
        parts += [
            "These names are also importable from the top level "
            f"(``from {package} import ...``) and documented under their subpackage:",
            "",
        ]
        parts += [f"- :obj:`{short.rsplit('.', 1)[1]} <{target}>`" for short, target in aliases.items()]
        parts.append("")
    if own:
        parts.append(_autosummary(package, own))
    for module_name in public_modules(package):
        parts += [
            _title(module_name, "-"),
            f".. automodule:: {module_name}",
            "   :no-members:",
            "",
            _autosummary(module_name, public_names(module_name)),
        ]
    return "\n".join(parts)


def write_api_page(srcdir: str | Path) -> Path:
    """Write ``api.rst`` into ``srcdir`` if its text changed; return its path."""
    path = Path(srcdir) / "api.rst"
    text = api_page()
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


class ResetArgv:
    """Command-line arguments of a gallery example in the docs' quick mode.

    Every example takes ``--tiny`` (tiny random image networks, few rows and
    epochs); those with a text modality get the offline all-MiniLM-L6-v2 preset,
    so the text expert is a real pretrained model.
    """

    TEXT_MODEL = "all-MiniLM-L6-v2"

    def __call__(self, sphinx_gallery_conf, script_vars) -> list[str]:
        args = ["--tiny"]
        source = Path(script_vars["src_file"]).read_text(encoding="utf-8")
        if '"--text-model"' in source:
            args += ["--text-model", self.TEXT_MODEL]
        return args

    def __repr__(self) -> str:
        # Sphinx compares configurations through their repr to decide on rebuilds.
        return f"{type(self).__name__}()"


def _resolve_alias(app, env, node, contnode):
    """Resolve ``medmix_sklearn.X`` and a bare ``X`` to the page that documents X."""
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    aliases = env.medmix_aliases
    candidates = [target]
    module = node.get("py:module")
    if module:
        candidates.append(f"{module}.{target}")
    for candidate in candidates:
        canonical = aliases.get(candidate)
        if canonical is not None:
            domain = env.get_domain("py")
            return domain.resolve_xref(
                env, node["refdoc"], app.builder, node["reftype"], canonical, node, contnode
            )
    return None


def _short_names() -> dict[str, str]:
    """Alias table: top-level spellings and unique bare names of every documented name."""
    aliases, own = top_level_aliases()
    table = dict(aliases)
    counts: dict[str, list[str]] = {}
    for module_name in public_modules():
        for name in public_names(module_name):
            counts.setdefault(name, []).append(f"{module_name}.{name}")
    for name in own:
        counts.setdefault(name, []).append(f"{PACKAGE}.{name}")
    for name, targets in counts.items():
        if len(targets) == 1:
            table.setdefault(name, targets[0])
    return table


def _skip_member(app, what, name, obj, skip, options):
    """Leave out scikit-learn's generated ``set_{method}_request`` (metadata routing)."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def _on_builder_inited(app) -> None:
    app.env.medmix_aliases = _short_names()


def setup(app):
    app.connect("builder-inited", _on_builder_inited)
    app.connect("missing-reference", _resolve_alias)
    app.connect("autodoc-skip-member", _skip_member)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


#: The callable named by ``sphinx_gallery_conf["reset_argv"]`` (an instance, by name,
#: so that Sphinx can cache the configuration).
reset_argv = ResetArgv()
