"""Sphinx configuration of the medmix_sklearn documentation.

Build with ``make docs`` (warnings are errors); the site lands in
``docs/_build/html``. The gallery runs every script of ``examples/`` in its quick
mode (``--tiny``: tiny random image networks, the offline MiniLM text expert),
a few minutes on a CPU; set ``MEDMIX_DOCS_PLOT_GALLERY=0`` to skip running them.

Links to scikit-learn, numpy, pandas, torch and Python (intersphinx) need their
``objects.inv`` inventories. Offline builds must not fetch them, so they are
used only when available: a file ``docs/_intersphinx/<name>.inv`` is read from
disk, and ``MEDMIX_INTERSPHINX=1`` fetches the rest from the web. Without
either, those references render as plain text and the build stays warning-free.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE / "sphinxext"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from medmix_docs import write_api_page  # noqa: E402

import medmix_sklearn  # noqa: E402

# The API page lists the package's public names. It is written here, before Sphinx
# looks for source files, so that a clean checkout builds it and its autosummary
# stubs in one pass.
write_api_page(HERE)

project = "medmix_sklearn"
author = "the medmix_sklearn developers"
copyright = "2026, the medmix_sklearn developers"
release = medmix_sklearn.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "medmix_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "_intersphinx",
    "sphinxext",
    "Thumbs.db",
    ".DS_Store",
    "auto_examples/*.ipynb",
    "auto_examples/*.py",
    "auto_examples/*.zip",
    "auto_examples/*.json",
    "auto_examples/*.md5",
    "sg_execution_times.rst",
    # Hand-written findings that bench_quality.py appends to quality.md, not a page of their own.
    "benchmarks/quality_notes.md",
]

# -- API reference ---------------------------------------------------------
# An explicit list: Sphinx finds its source files before conf.py has written
# api.rst, so on a clean checkout "True" would scan no API page and leave every
# stub missing.
autosummary_generate = ["api.rst"]
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"  # the numpydoc sections carry the public types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

# -- Markdown pages --------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist"]
# GitHub-style anchors, so that links like concepts.md#the-block-layout work both
# on the rendered site and when the Markdown is read on its own.
myst_heading_anchors = 3

# -- intersphinx: only inventories that are available (see the module docstring)
_INVENTORIES = {
    "python": "https://docs.python.org/3",
    "sklearn": "https://scikit-learn.org/stable",
    "numpy": "https://numpy.org/doc/stable",
    "pandas": "https://pandas.pydata.org/docs",
    "torch": "https://docs.pytorch.org/docs/stable",
}
_FETCH = os.environ.get("MEDMIX_INTERSPHINX", "0") == "1"
intersphinx_mapping = {}
for _name, _url in _INVENTORIES.items():
    _local = HERE / "_intersphinx" / f"{_name}.inv"
    if _local.is_file():
        intersphinx_mapping[_name] = (_url, str(_local))
    elif _FETCH:
        intersphinx_mapping[_name] = (_url, None)

# -- Gallery ---------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(HERE.parent / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r".*\.py$",  # run every example, not only plot_*.py
    "ignore_pattern": r"(^|/)_",
    "reset_argv": "medmix_docs.reset_argv",
    "plot_gallery": os.environ.get("MEDMIX_DOCS_PLOT_GALLERY", "True"),
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "doc_module": ("medmix_sklearn",),
    "backreferences_dir": "generated/backreferences",
    "download_all_examples": False,
    "remove_config_comments": True,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
}

# -- HTML ------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"medmix_sklearn {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_static_path: list[str] = []
