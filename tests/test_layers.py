"""The layer order (docs/architecture.md) holds: every import in the source tree goes down.

    common -> tt_ops -> models -> export -> runtime_demo -> orchestration (tensorgpt/)

Each package may import itself and the packages listed for it in ALLOWED; runtime_demo runs
without torch, so it may import only common (test_no_torch checks the third-party side).
Imports inside functions count too: a lazy import still couples the layers.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# installed name -> folder in the repo (pyproject.toml's package-dir)
FOLDERS = {
    "common": "common",
    "tt_ops": "tt_ops",
    "models": "models",
    "export": "export",
    "runtime_demo": "runtime_demo",
    "orchestration": "tensorgpt",
}
ALLOWED = {
    "common": {"common"},
    "tt_ops": {"common", "tt_ops"},
    "models": {"common", "tt_ops", "models"},
    "export": {"common", "tt_ops", "models", "export"},
    "runtime_demo": {"common", "runtime_demo"},
    "orchestration": set(FOLDERS),
}
# The contract and file helpers: stdlib only, so any install (and any layer) can read them.
STDLIB_ONLY = ("common/contract.py", "common/files.py", "common/command.py", "common/__init__.py")


def layer_of(module: str) -> str | None:
    """'tensorgpt.export.body' -> 'export'; the package root (its __version__) is common."""
    parts = module.split(".")
    if parts[0] != "tensorgpt":
        return None
    if len(parts) == 1 or parts[1] == "__init__":
        return "common"
    return parts[1] if parts[1] in ALLOWED and parts[1] != "orchestration" else "orchestration"


def imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `source`, resolving relative ones
    against `package` (the importing module's package, e.g. 'tensorgpt.export')."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == "tensorgpt":  # `from tensorgpt import sweep`: the module tensorgpt.sweep
                found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, module))
    return found


def violations(layer: str, source: str, package: str) -> list[str]:
    out = []
    for line, module in imported_modules(source, package):
        target = layer_of(module)
        if module == "tensorgpt.__version__" or target is None:
            continue
        if target not in ALLOWED[layer]:
            out.append(f"{line}: {module} ({target})")
    return out


def _files():
    for layer, folder in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            package = "tensorgpt" if layer == "orchestration" else f"tensorgpt.{layer}"
            yield layer, path, package


def test_every_import_goes_down_the_layers() -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{v}"
        for layer, path, package in _files()
        for v in violations(layer, path.read_text(encoding="utf-8"), package)
    ]
    assert bad == [], "imports against the layer order:\n" + "\n".join(bad)


def test_the_check_catches_an_upward_import() -> None:
    assert violations("export", "from tensorgpt.runtime_demo.session import x\n", "x") == [
        "1: tensorgpt.runtime_demo.session (runtime_demo)"
    ]
    assert violations("runtime_demo", "def f():\n    import tensorgpt.export.body\n", "x") != []
    assert violations("common", "from tensorgpt import cli\n", "tensorgpt.common") != []
    assert violations("export", "from ..runtime_demo import session\n", "tensorgpt.export") != []
    assert violations("export", "from .body import f\n", "tensorgpt.export") == []


def test_contract_modules_use_the_standard_library_only() -> None:
    for name in STDLIB_ONLY:
        source = (ROOT / name).read_text(encoding="utf-8")
        for line, module in imported_modules(source, "tensorgpt.common"):
            top = module.split(".")[0]
            assert top in sys.stdlib_module_names or module.startswith(
                ("tensorgpt.common", "__future__")
            ), f"{name}:{line} imports {module}"
