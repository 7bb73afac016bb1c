"""The docs cannot drift: the API page covers the public names, links resolve, the CLI page is complete."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md")) + [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md"]

_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_FENCE = re.compile(r"^(```|~~~)")


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code."""
    out, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            out.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(out)


def anchors(path: Path) -> set:
    """GitHub-style anchors of the headings of a Markdown file."""
    found, seen, fenced = set(), {}, False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line.strip()):
            fenced = not fenced
            continue
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if fenced or not match:
            continue
        slug = "".join(
            ch for ch in match.group(1).strip().lower().replace(" ", "-")
            if ch.isalnum() or ch in "-_"
        )
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def relative_links(page: Path):
    for target in _LINK.findall(prose(page.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        yield target


def load_docs_ext():
    """docs/sphinxext/medmix_docs.py, which writes the API page at build time."""
    spec = importlib.util.spec_from_file_location("medmix_docs", DOCS / "sphinxext" / "medmix_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def autosummary_entries(text: str) -> set:
    """``module.name`` of every autosummary entry of an rst page."""
    entries, module, in_list = set(), None, False
    for line in text.splitlines():
        if line.startswith(".. currentmodule::"):
            module = line.split("::", 1)[1].strip()
        elif line.startswith(".. autosummary::"):
            in_list = True
        elif in_list and line.startswith("   ") and not line.strip().startswith(":"):
            if line.strip():
                entries.add(f"{module}.{line.strip()}")
        elif in_list and line.strip() and not line.startswith("   "):
            in_list = False
    return entries


def test_api_page_lists_every_public_name():
    """Every name of every public module's __all__, and of the top level, is on the page."""
    import pkgutil

    import medmix_sklearn

    text = load_docs_ext().api_page()
    entries = autosummary_entries(text)
    modules = [
        f"medmix_sklearn.{m.name}"
        for m in pkgutil.iter_modules(medmix_sklearn.__path__)
        if not m.name.startswith("_") and m.name != "cli"
    ]
    assert "medmix_sklearn.experts" in modules and "medmix_sklearn.fusion" in modules
    missing = []
    for module_name in modules:
        module = importlib.import_module(module_name)
        assert hasattr(module, "__all__"), f"{module_name} is public but has no __all__"
        assert f".. automodule:: {module_name}" in text
        missing += [f"{module_name}.{n}" for n in module.__all__ if f"{module_name}.{n}" not in entries]
    for name in medmix_sklearn.__all__:
        if name == "__version__":
            continue
        obj = getattr(medmix_sklearn, name)
        # At the top, or on the page of a subpackage that exports the same object
        # and named in the list of names importable from the top.
        owners = [
            f"{m}.{name}" for m in modules if getattr(importlib.import_module(m), name, None) is obj
        ]
        on_page = f"medmix_sklearn.{name}" in entries or (
            any(owner in entries for owner in owners) and f":obj:`{name} <{owners[0]}>`" in text
        )
        if not on_page:
            missing.append(f"medmix_sklearn.{name}")
    assert not missing, f"public names missing from the API page: {missing}"
    # Each object is documented once: a top-level alias gets no second page.
    assert "medmix_sklearn.MedMIXClassifier" not in entries
    assert "medmix_sklearn.fusion.MedMIXClassifier" in entries
    assert "medmix_sklearn.save_model" in entries  # only the top level exports it


def test_api_page_refuses_a_public_module_without_all(tmp_path, monkeypatch):
    package = tmp_path / "fakepkg"
    (package / "public").mkdir(parents=True)
    (package / "__init__.py").write_text("__all__ = []\n")
    (package / "public" / "__init__.py").write_text("x = 1\n")
    (package / "_private.py").write_text("y = 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ext = load_docs_ext()
    assert ext.public_modules("fakepkg") == ["fakepkg.public"]
    with pytest.raises(RuntimeError, match="fakepkg.public is public .* defines no __all__"):
        ext.api_page("fakepkg")


def test_intersphinx_is_off_offline_and_on_when_asked(monkeypatch):
    """The build never fetches inventories unless MEDMIX_INTERSPHINX=1 (offline builds stay clean)."""
    import runpy

    monkeypatch.delenv("MEDMIX_INTERSPHINX", raising=False)
    local = {p.stem for p in (DOCS / "_intersphinx").glob("*.inv")}
    conf = runpy.run_path(str(DOCS / "conf.py"))
    assert set(conf["intersphinx_mapping"]) == local
    monkeypatch.setenv("MEDMIX_INTERSPHINX", "1")
    conf = runpy.run_path(str(DOCS / "conf.py"))
    assert {"sklearn", "numpy", "pandas", "torch"} <= set(conf["intersphinx_mapping"])


def test_gallery_runs_each_example_in_quick_mode(tmp_path):
    ext = load_docs_ext()
    for script in ("pipeline_cross_val", "precomputed_embeddings", "custom_expert"):
        args = ext.reset_argv({}, {"src_file": str(ROOT / "examples" / f"{script}.py")})
        assert args[0] == "--tiny"
        text = (ROOT / "examples" / f"{script}.py").read_text(encoding="utf-8")
        assert ("--text-model" in args) == ('"--text-model"' in text)


def test_custom_expert_guide_code_runs(tmp_path):
    """The skeleton of docs/custom-experts.md is a working expert."""
    import numpy as np
    import pandas as pd

    text = (DOCS / "custom-experts.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 2
    namespace = {}
    for block in blocks:
        exec(compile(block, "custom-experts.md", "exec"), namespace)
    expert_class = namespace["MyExpert"]
    frame = pd.DataFrame({"report": ["no acute findings", None, "no acute findings", "effusion"]})
    embedder = namespace["MultimodalExpertEmbedder"](
        [("report", [expert_class()], "report")], cache_dir=str(tmp_path)
    )
    out = embedder.fit_transform(frame)
    assert list(out.columns[:2]) == ["report__my-model__0", "report__my-model__1"]
    assert out.shape == (4, 32)
    assert out.iloc[1].isna().all() and not out.drop(index=1).isna().any(axis=None)
    np.testing.assert_array_equal(out.iloc[0], out.iloc[2])
    # A second embedder finds everything in the cache and never loads the model.
    again = expert_class()
    namespace["MultimodalExpertEmbedder"]([("report", [again], "report")], cache_dir=str(tmp_path)).fit_transform(
        frame
    )
    assert not again.is_loaded
    assert expert_class(dim=16).fingerprint() != expert_class().fingerprint()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    broken = []
    for target in relative_links(page):
        path_part, _, fragment = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            broken.append(f"{target} (no heading with anchor #{fragment})")
    assert not broken, f"{page.relative_to(ROOT)} has broken links: {broken}"


ALL_PAGES = sorted(DOCS.rglob("*.md")) + PAGES[-3:]


def headings_with_links(path: Path) -> list:
    """Markdown headings that hold a link (Sphinx's page contents crash on them)."""
    return [
        line for line in prose(path.read_text(encoding="utf-8")).splitlines()
        if line.startswith("#") and _LINK.search(line)
    ]


def test_no_heading_holds_a_link(tmp_path):
    offending = {
        str(p.relative_to(ROOT)): found for p in ALL_PAGES if (found := headings_with_links(p))
    }
    assert not offending, f"move these links out of the headings: {offending}"
    page = tmp_path / "page.md"
    page.write_text("# Title\n## Results ([raw](r.json))\n```\n# [in code](x.md)\n```\n")
    assert headings_with_links(page) == ["## Results ([raw](r.json))"]


def test_link_checker_catches_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n[ok](#title) [bad](missing.md) [web](https://example.org)\n"
        "```\n[in code](nowhere.md)\n```\n",
        encoding="utf-8",
    )
    assert list(relative_links(page)) == ["#title", "missing.md"]
    assert anchors(page) == {"title"}


def test_cli_page_covers_every_command_and_option():
    from medmix_sklearn.cli import build_parser

    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert set(subparsers.choices) == {
        "demo", "fit", "predict", "cv", "tune", "embed", "cache", "info"
    }
    missing = []
    for command, sub in subparsers.choices.items():
        if f"`medmix {command}`" not in text:
            missing.append(f"medmix {command}")
        for action in sub._actions:
            for option in action.option_strings:
                if option.startswith("--") and option not in ("--help",) and option not in text:
                    missing.append(f"medmix {command} {option}")
    assert not missing, f"docs/cli.md does not mention: {missing}"
