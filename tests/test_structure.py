"""The shape of the code, checked from its imports: the console and the CLI go through the service
layer, not the HTTP routers, and no module reaches into another package's private names."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tuneforge"


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(), filename=str(path))


def _package_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:2]) if len(parts) > 2 else ".".join(parts)


def _imports(tree: ast.AST):
    """(module imported, name imported or None) for every import in a module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                yield node.module, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None


def test_the_console_never_imports_an_http_router():
    for path, tree in _modules():
        if "web" not in path.relative_to(PACKAGE).parts[:1]:
            continue
        for module, name in _imports(tree):
            target = f"{module}.{name}" if name else module
            assert not target.startswith("tuneforge.api"), f"{path.name} imports {target}: the console uses tuneforge.services"


def test_no_private_name_crosses_a_package_boundary():
    offences = []
    for path, tree in _modules():
        home = _package_of(path)
        for module, name in _imports(tree):
            if not module.startswith("tuneforge") or name is None:
                continue
            owner = ".".join(module.split(".")[:2])
            if name.startswith("_") and not name.startswith("__") and owner != home:
                offences.append(f"{path.relative_to(PACKAGE)}: from {module} import {name}")
        imported = {}  # local name -> what it was imported as
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.update({alias.asname or alias.name: f"{node.module}.{alias.name}" for alias in node.names})
            elif isinstance(node, ast.Import):
                imported.update({alias.asname or alias.name.split(".")[0]: alias.name for alias in node.names})
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                source = imported.get(node.value.id, "")
                if source.startswith("tuneforge") and ".".join(source.split(".")[:2]) != home:
                    offences.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not offences, "private names used across packages:\n" + "\n".join(offences)


def test_routers_only_translate():
    """The OCI routers hold no database access of their own: every route calls tuneforge.services."""
    for path, tree in _modules():
        if path.parent.name != "api" or not path.name.endswith(("_routes.py", "objectstorage.py")):
            continue
        for module, _ in _imports(tree):
            assert not module.startswith(("sqlalchemy", "tuneforge.store", "tuneforge.jobs")), f"{path.name} imports {module}"


def test_no_web_framework_below_the_routers():
    """The service layer, the jobs, the engine and the stores know nothing of HTTP frameworks: only the
    routers (tuneforge/api), the console (tuneforge/web) and the composition root (server.py) do."""
    offences = []
    for path, tree in _modules():
        top = path.relative_to(PACKAGE).parts[0]
        if top in ("api", "web", "server.py"):
            continue
        for module, _ in _imports(tree):
            if module.split(".")[0] in ("fastapi", "starlette", "uvicorn"):
                offences.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert not offences, "web framework imports below the routers:\n" + "\n".join(offences)


def _reaches_into_a_conftest(tree: ast.AST) -> list[str]:
    """Imports of a module named conftest, and code naming a conftest file or module (what loading one
    through importlib, runpy or exec needs); docstrings may mention conftest.py."""
    found = list(dict.fromkeys(f"imports {module}" for module, _ in _imports(tree) if module.split(".")[-1] == "conftest"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        text = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else ""
        if (text == "conftest" or text.endswith("conftest.py")) and id(node) not in docstrings:
            found.append(f"line {node.lineno} names {text!r}")
    return found


def test_tests_import_helpers_as_modules_never_from_a_conftest():
    """Helpers live in tests/helpers/ and are imported by name: `from conftest import` (or loading a
    conftest.py through importlib) gets whichever conftest pytest loaded last, so it works only in
    some collection orders."""
    tests = Path(__file__).resolve().parent
    offences = [
        f"{path.relative_to(tests)}: {found}"
        for path in sorted(tests.rglob("*.py"))
        if path != Path(__file__).resolve()  # this file names what it looks for
        for found in _reaches_into_a_conftest(ast.parse(path.read_text(), filename=str(path)))
    ]
    assert not offences, "tests reaching into a conftest.py (import from tests/helpers/ instead):\n" + "\n".join(offences)


def test_tests_import_helpers_never_another_test_module():
    """A test module importing another (`from test_protocol import ...`) resolves only through the
    folder pytest puts on sys.path for each test file, and runs that module's fixtures twice: what
    tests share lives in tests/helpers/."""
    tests = Path(__file__).resolve().parent
    names = {path.stem for path in tests.rglob("test_*.py")}
    offences = [
        f"{path.relative_to(tests)}: imports {module}"
        for path in sorted(tests.rglob("*.py"))
        for module, _ in _imports(ast.parse(path.read_text(), filename=str(path)))
        if module.split(".")[0] in names
    ]
    assert not offences, "tests importing another test module (move what they share to tests/helpers/):\n" + "\n".join(offences)


def test_one_polling_loop_for_the_tests():
    """tests/helpers/waiting.py's wait_for is the tests' only polling loop: no file writes its own copy."""
    tests = Path(__file__).resolve().parent
    copies = [
        str(path.relative_to(tests))
        for path in sorted(tests.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
        if isinstance(node, ast.FunctionDef) and node.name == "wait_for"
    ]
    assert copies == ["helpers/waiting.py"], copies
