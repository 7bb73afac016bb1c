"""Package structure: no module imports another package's private names."""

import ast
import pathlib

import medmix_sklearn

ROOT = pathlib.Path(medmix_sklearn.__file__).parent
PACKAGE = "medmix_sklearn"


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _home(module: str) -> str:
    """The package a module belongs to: its subpackage, or the root for top-level modules."""
    parts = module.split(".")
    if len(parts) >= 2 and (ROOT / parts[1]).is_dir():
        return ".".join(parts[:2])
    return PACKAGE


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _imports(module: str, is_package: bool, source: str):
    """``(imported module, imported names, line)`` for every import of our package."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                yield target, [alias.name for alias in node.names], node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PACKAGE + "."):
                    yield alias.name, [], node.lineno


def _sources():
    for path in sorted(ROOT.rglob("*.py")):
        yield _module_name(path), path.name == "__init__.py", path.read_text(encoding="utf-8")


def _violations(sources):
    found = []
    for module, is_package, source in sources:
        home = _home(module)
        for target, names, line in _imports(module, is_package, source):
            names = [n for n in names if n != "*"]
            # "from .pkg import _mod" imports a module: treat it as part of the path.
            submodules = [n for n in names if (ROOT.parent / (target + "." + n).replace(".", "/")).exists()
                          or (ROOT.parent / ((target + "." + n).replace(".", "/") + ".py")).exists()]
            for sub in submodules:
                names.remove(sub)
            for full in [target] + [f"{target}.{s}" for s in submodules]:
                other = _home(full)
                if other == home:
                    continue
                inner = full.split(".")[len(other.split(".")):]
                # Top-level private modules (_layout, _missing, _files, ...) are the shared
                # bottom layer: their public names may be imported from anywhere.
                if other != PACKAGE and any(_private(p) for p in inner):
                    found.append(f"{module}:{line} imports private module {full}")
            if _home(target) != home:
                for name in names:
                    if _private(name):
                        found.append(f"{module}:{line} imports private name {name} from {target}")
    return found


def test_no_module_imports_another_packages_private_names():
    assert _violations(_sources()) == []


def test_the_checker_sees_a_private_import():
    """The check above can fail: it flags both kinds of import, and only those."""
    planted = (
        "from ..report._html import render_report\n"
        "from .._provenance import _as_jsonable\n"
        "from ..model_selection import _split\n"
        "from .._missing import subset_score\n"
        "from ._entries import _config_entries\n"
        "import medmix_sklearn.embedding._cache\n"
    )
    found = _violations([("medmix_sklearn.cli._planted", False, planted)])
    assert len(found) == 4, found
    assert any("private module medmix_sklearn.report._html" in f for f in found)
    assert any("private name _as_jsonable" in f for f in found)
    assert any("private module medmix_sklearn.model_selection._split" in f for f in found)
    assert any("private module medmix_sklearn.embedding._cache" in f for f in found)


def test_import_loads_no_heavy_dependency():
    """``import medmix_sklearn`` (and the parser of ``medmix``) load no torch, skorch or optuna."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "heavy = ('torch', 'skorch', 'optuna', 'transformers', 'timm', 'matplotlib')\n"
        "import medmix_sklearn\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "import medmix_sklearn.model_selection, medmix_sklearn.report\n"
        "from medmix_sklearn.cli import build_parser\n"
        "build_parser()\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    after_import, after_cli = out.stdout.strip().splitlines()
    assert after_import == "[]"
    assert after_cli == "[]"


def test_public_names_resolve_and_are_listed():
    import medmix_sklearn

    for name in medmix_sklearn.__all__:
        assert getattr(medmix_sklearn, name) is not None
    assert set(medmix_sklearn.__all__) <= set(dir(medmix_sklearn))
    assert set(medmix_sklearn.__all__) == {*medmix_sklearn._LAZY, "__version__"}
    import pytest

    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        medmix_sklearn.nope
