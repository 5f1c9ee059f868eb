"""What a run's identity hashes: exactly the code that executes it, found by following imports.

Two runs are the same configuration only if the same code ran them. That code is found, not
listed by hand: the module-level imports of run.py (the harness) and of the optimizer module are
followed through the project's packages (`nanogpt`, `optimizers`). Reporting (`analysis`) is
never imported at module level by the training path, so an edit to a plot cannot split a
configuration, while an edit to a module an optimizer imports (muon2f.py imports muon2.py) changes
that optimizer's code hash. Third-party packages an optimizer imports enter by name, version and
a hash of their installed source files; the platform itself (PLATFORM: torch, numpy) enters by
version through the run's environment. A module of values (VALUE_MODULES: the track table) is
followed but not hashed: what it defines reaches a run only as the resolved track, which the
configuration holds by value, so adding or calibrating one track leaves every other track's runs
the same configuration.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path

from nanogpt.errors import UserError

PROJECT_PACKAGES = ("nanogpt", "optimizers")
PLATFORM = ("torch", "numpy")  # recorded by version in every log's environment, not hashed file by file
VALUE_MODULES = ("nanogpt/tracks.py",)  # identified by the resolved values a run holds (track_sha256)


def _module_imports(path: Path, package: str) -> list[str]:
    """Absolute names imported at module level (not inside functions, which run only when called)."""
    tree = ast.parse(path.read_text(), str(path))
    names = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's own package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module
            names.append(module)
            names += [f"{module}.{a.name}" for a in node.names]  # `from package import module`
    return names


def _project_file(name: str, root: Path) -> Path | None:
    if name.split(".")[0] not in PROJECT_PACKAGES:
        return None
    parts = name.split(".")
    for candidate in (root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")):
        if candidate.is_file():
            return candidate
    return None


def closure(start: Path, root: Path) -> tuple[list[str], list[str]]:
    """(project files imported from `start`, transitively, as paths relative to root, in the order
    found; top-level names of the other packages imported on the way)."""
    files: list[str] = []
    others: set[str] = set()
    seen = {start}
    todo = [start]
    while todo:
        path = todo.pop(0)
        rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else None
        package = ".".join(Path(rel).with_suffix("").parts[:-1]) if rel else ""
        if rel and rel.endswith("__init__.py"):
            package = ".".join(Path(rel).parts[:-1])
        for name in _module_imports(path, package):
            found = _project_file(name, root)
            if found is None:
                if name.split(".")[0] not in PROJECT_PACKAGES:
                    others.add(name.split(".")[0])
                continue
            if found not in seen:
                seen.add(found)
                todo.append(found)
                if (found_rel := found.relative_to(root).as_posix()) not in VALUE_MODULES:
                    files.append(found_rel)
    return files, sorted(others)


def third_party(names: list[str]) -> dict[str, dict]:
    """Name, version and sha256 of the installed source files of each non-standard, non-platform
    package (sorted by relative path, so the hash does not depend on the file system's order)."""
    out = {}
    for name in names:
        if name in sys.stdlib_module_names or name in PLATFORM or name == "__future__":
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise UserError(f"the optimizer imports {name!r}, which is not installed; pip install it")
        top = Path(spec.origin).parent if spec.submodule_search_locations else Path(spec.origin)
        files = sorted(top.rglob("*.py")) if top.is_dir() else [top]
        digest = hashlib.sha256()
        for f in files:
            digest.update(f"{f.relative_to(top.parent).as_posix()}\n".encode())
            digest.update(f.read_bytes())
        dist = importlib.metadata.packages_distributions().get(name, [name])[0]
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = None
        out[name] = {"distribution": dist, "version": version, "sha256": digest.hexdigest(), "files": len(files)}
    return out
