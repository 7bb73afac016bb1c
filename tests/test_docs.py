"""The docs cannot drift: the API page matches the code, links resolve, the CLI page is complete."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md")) + [ROOT / "README.md"]

_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_FENCE = re.compile(r"^(```|~~~)")


def load_build_api():
    spec = importlib.util.spec_from_file_location("build_api", DOCS / "build_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def test_api_page_is_up_to_date():
    expected = load_build_api().build()
    current = (DOCS / "api.md").read_text(encoding="utf-8")
    assert current == expected, "docs/api.md is out of date: run `python docs/build_api.py`"


def test_api_page_is_deterministic_and_complete():
    build_api = load_build_api()
    text = build_api.build()
    assert build_api.build() == text
    assert " at 0x" not in text  # no object addresses in signatures
    import medmix_sklearn

    for name in medmix_sklearn.__all__:
        assert f"`medmix_sklearn.{name}`" in text, name
    for heading in ("class MedMIXClassifier(", "class MultimodalExpertEmbedder(", "explain(self, X)"):
        assert heading in text


def test_api_check_mode_reports_drift(tmp_path, monkeypatch):
    build_api = load_build_api()
    stale = tmp_path / "api.md"
    stale.write_text("# stale\n", encoding="utf-8")
    monkeypatch.setattr(build_api, "API_PATH", stale)
    assert build_api.main(["--check"]) == 1
    assert build_api.main([]) == 0
    assert build_api.main(["--check"]) == 0


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
    assert set(subparsers.choices) == {"demo", "fit", "predict", "cv", "tune", "embed", "info"}
    missing = []
    for command, sub in subparsers.choices.items():
        if f"`medmix {command}`" not in text:
            missing.append(f"medmix {command}")
        for action in sub._actions:
            for option in action.option_strings:
                if option.startswith("--") and option not in ("--help",) and option not in text:
                    missing.append(f"medmix {command} {option}")
    assert not missing, f"docs/cli.md does not mention: {missing}"
