"""Which code computed a result: the import closure of a module inside the package, its hash, and the
git commit.

A checkpoint carries the hash of the training code's closure, so that a run resumes only with the
code that began it; `tests/test_dvc.py` checks every stage's dependencies against the same closure.
"""

from __future__ import annotations

import ast
import hashlib
import os
import subprocess
from datetime import datetime, timezone
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).parent


def module_file(name: str) -> Path | None:
    """The file of module `rlcsc.x.y`, or None when `name` is not a module of the package."""
    parts = name.split(".")
    if parts[0] != PACKAGE.name:
        return None
    base = PACKAGE.parent.joinpath(*parts)
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.exists()), None)


def imported(tree: ast.AST) -> set[str]:
    """Every module of the package that `tree` imports, anywhere in it (lazy imports in functions too)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}  # `from rlcsc import recipe`
    return {n for n in names if module_file(n)}


def closure(modules: set[str], top_level_only: frozenset[str] = frozenset()) -> set[Path]:
    """The files of `modules` and of every package module they import, their packages' `__init__.py`
    included. Of the modules in `top_level_only`, only the imports at module level count."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b.c runs a and a.b
        tree = ast.parse(module_file(name).read_text())
        if name in top_level_only:
            tree = ast.Module([n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], [])
        todo += imported(tree)
    return {module_file(n) for n in seen}


def digest(files: set[Path]) -> str:
    """SHA-256 over files (their paths inside the package, then their bytes), in sorted order."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


@cache
def code_hash(module: str) -> str:
    """The hash of `module`'s import closure: what changes exactly when code it runs changes."""
    return digest(closure({module}))


def source_hash() -> str:
    """The hash of the package's whole source and data (.py, .tsv, .csv)."""
    return digest({p for p in PACKAGE.rglob("*") if p.suffix in (".py", ".tsv", ".csv")})


def commit() -> str | None:
    """The project's git commit, else $RLCSC_COMMIT, else None; with "-dirty" where the package's code differs from
    it (a changed file, or one git does not track), not for what runs write beside it (a new or extended
    `runs/<name>/`). A repository that the package is merely installed inside (a virtual environment in
    another project) is not the project's."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=PACKAGE.parent, capture_output=True, text=True,
                              check=True).stdout.strip()

    try:
        top, head = git("rev-parse", "--show-toplevel", "HEAD").splitlines()
        if Path(top).resolve() == PACKAGE.parent.resolve():
            return head + ("-dirty" if git("status", "--porcelain", "--", PACKAGE.name) else "")
    except (OSError, ValueError, subprocess.CalledProcessError):
        pass
    return os.environ.get("RLCSC_COMMIT")


def stamp() -> dict:
    """When and from which code a result is made: the commit (see `commit`) and the UTC date."""
    return {"commit": commit(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
