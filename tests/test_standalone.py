"""The repository stands alone: a clone into an empty folder has everything its code, tests and
docs read, so `make test` there runs (and checks) everything, with nothing skipped for a file that
lives elsewhere on some machine.

Checked here: no tracked file refers to a place outside the repository; every recorded
Polymarket payload a test names is in ``tests/contract/samples/`` (tracked, and listed in its
README); and every module the code and tests import is declared, pinned, in requirements*.txt
(what the deployed app imports in requirements.txt itself), not left to arrive as a dependency of
something else. Each check is shown to fail on a bad input.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib.metadata
import json
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT, SAMPLES

# Ways a file has reached outside the repository. The patterns are written so that their own
# source text does not match them (``\.`` is not ``.``), so this file is scanned like any other.
OUTSIDE_REFERENCES = {
    "a relative path that climbs out of the repository": re.compile(r"(?<![\w.])\.\./+[A-Za-z_]"),
    "a grandparent of a file (parents[n], n >= 2)": re.compile(r"\.parents\[\s*[2-9]\s*\]"),
    "the folder holding the repository": re.compile(r"\bROOT\s*\.\s*parent\b|\.parent\s*\.\s*parent\b"),
    "an absolute path on one machine": re.compile(r"(?<![\w.:/])/(?:work|home|Users|root|mnt)/[\w.-]"),
    "the upstream contract's own folder": re.compile(r"\bshared\b\W{1,6}polymarket-(?:api\.md|samples)\b"),
}
# Path-traversal strings the security tests send to the API as attack input: not files we read.
ALLOWED = [
    ("tests/test_security.py", re.compile(r"[\"']\.\./\.\./\.\./\.\./etc/passwd[\"']")),
    ("tests/test_prices.py", re.compile(r"[\"']\.\./x[\"']")),
    ("tests/test_http.py", re.compile(r"[\"']\.\./\.\./function_app\.py[\"']")),  # a traversal the docs route refuses
]
SAMPLE_NAME = re.compile(r"[\"']((?:clob|gamma)_[\w-]+\.json)[\"']")


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name]


def outside_references(name: str, text: str) -> list[str]:
    """``path:line: what`` for each place in ``text`` that reaches outside the repository."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for pattern_file, allowed in ALLOWED:
            if name == pattern_file:
                line = allowed.sub("", line)
        for what, pattern in OUTSIDE_REFERENCES.items():
            if pattern.search(line):
                found.append(f"{name}:{number}: {what}: {line.strip()[:120]}")
    return found


def test_tracked_files_are_listed() -> None:
    files = tracked_files()
    # The scan below must see the things that matter, or it proves nothing.
    for needed in ("Makefile", ".ci/run", "deploy.sh", "test_local.sh", "README.md", "tests/conftest.py",
                   "docs/polymarket-api.md", "tests/contract/samples/README.md", "shared/prices/quotes.py"):
        assert needed in files, needed


def test_no_tracked_file_reaches_outside_the_repository() -> None:
    found = []
    scanned = 0
    for name in tracked_files():
        path = ROOT / name
        if not path.is_file():  # deleted in the work tree, not yet committed
            continue
        raw = path.read_bytes()
        if b"\0" in raw:
            continue  # binary
        scanned += 1
        found += outside_references(name, raw.decode("utf-8"))
    assert scanned > 50
    assert not found, "references outside the repository:\n" + "\n".join(found)


# Lines this repository once had, or could grow. "\x2e" is "." and "\x2f" is "/": spelt so, the
# cases do not match in this file's own source (which the scan above reads).
@pytest.mark.parametrize(
    "line",
    [
        'SHARED = ROOT\x2eparent / "shared"',
        'SAMPLES = Path(__file__).resolve().parents\x5b2] / "shared" / "polymarket\x2dsamples"',
        "that follows `\x2e\x2e/shared\x2fpolymarket-api.md`",
        "Traps (``shared\x2fpolymarket-api.md`` section 4)",
        "# CI entry point: a clean clone with \x2e\x2e/shared beside it.",
        "cat \x2fwork/shared\x2fpolymarket-api.md",
        'open("\x2fhome/someone/samples/clob_book.json")',
        "here = Path(__file__).parent\x2eparent",
        "cp \x2e\x2e/other-repo/fixtures/*.json tests/",
    ],
)
def test_the_scan_catches_what_this_repository_once_had(line: str) -> None:
    assert outside_references("somewhere.py", line)


@pytest.mark.parametrize(
    "line",
    [
        'ROOT = Path(__file__).resolve().parents[1]',
        "see ``docs/polymarket-api.md`` §3 and ``tests/contract/samples/clob_book.json``",
        "from shared.prices.quotes import parse_book",
        'LEAK_MARKERS = ("Traceback", "/work/", "site-packages")',
        "curl -s 'localhost:7071/api/markets?q=bitcoin&limit=5'",
        "https://docs.polymarket.com/api-reference/markets/list-markets",
    ],
)
def test_the_scan_lets_in_repo_references_through(line: str) -> None:
    assert outside_references("somewhere.py", line) == []


def test_every_sample_a_test_names_is_in_the_repository() -> None:
    named: dict[str, list[str]] = {}
    for test in sorted((ROOT / "tests").glob("test_*.py")):
        for name in SAMPLE_NAME.findall(test.read_text(encoding="utf-8")):
            named.setdefault(name, []).append(test.name)
    # The contract tests do name samples; finding none means this check lost its way.
    for test in ("test_quotes.py", "test_gamma_markets.py", "test_standin.py"):
        assert any(test in users for users in named.values()), test
    missing = {name: users for name, users in named.items() if not (SAMPLES / name).is_file()}
    assert not missing, f"samples named by tests but not in {SAMPLES.relative_to(ROOT)}: {missing}"


def test_samples_are_tracked_valid_json_and_described() -> None:
    tracked = set(tracked_files())
    present = sorted(p.name for p in SAMPLES.glob("*.json"))
    assert len(present) >= 40
    untracked = [n for n in present if f"tests/contract/samples/{n}" not in tracked]
    assert not untracked, f"samples a clone would not have (not in git): {untracked}"
    for name in present:
        json.loads((SAMPLES / name).read_text(encoding="utf-8"))
    readme = (SAMPLES / "README.md").read_text(encoding="utf-8")
    described = set(re.findall(r"`((?:clob|gamma)_[\w-]+\.json)`", readme))
    assert set(present) - described == set(), "samples the README does not say the origin of"
    assert described - set(present) == set(), "samples the README describes that are not there"


# --- every imported module is declared ---------------------------------------------------------

LOCAL_MODULES = {"shared", "devtools", "tests", "bench", "function_app"}


def python_sources() -> list[str]:
    """Tracked Python files, including the extension-less scripts in tests/fakes."""
    sources = []
    for name in tracked_files():
        path = ROOT / name
        if name.endswith(".py") or (path.is_file() and path.read_bytes()[:64].startswith(b"#!/usr/bin/env python")):
            sources.append(name)
    return sources


def imported_modules() -> dict[str, set[str]]:
    """Third-party module (as imported, e.g. ``azure.functions``) -> the files importing it."""
    found: dict[str, set[str]] = {}
    for name in python_sources():
        trees = [ast.parse((ROOT / name).read_text(encoding="utf-8"), name)]
        # Code run in a subprocess (``python -c PROBE``) imports too.
        for node in ast.walk(trees[0]):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "import " in node.value:
                with contextlib.suppress(SyntaxError):  # prose, not code
                    trees.append(ast.parse(node.value))
        for node in (n for tree in trees for n in ast.walk(tree)):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top not in LOCAL_MODULES and top != "__future__":
                    found.setdefault(module, set()).add(name)
    return found


def normalise(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def declared_distributions(files: tuple[str, ...] = ("requirements.txt", "requirements-dev.txt")) -> set[str]:
    declared = set()
    for requirements in files:
        for line in (ROOT / requirements).read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line and not line.startswith("-"):
                declared.add(normalise(re.split(r"[\s<>=!~;\[]", line, maxsplit=1)[0]))
    return declared


@functools.cache
def _installed() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


@functools.cache
def providers(module: str) -> set[str]:
    """Installed distributions that ship ``module`` (for a namespace such as ``azure``, the ones
    that ship the imported sub-package, not every ``azure-*``)."""
    parts = module.split(".")
    candidates = _installed().get(parts[0], [])
    if len(set(candidates)) <= 1 or len(parts) == 1:
        return {normalise(d) for d in candidates}
    prefix = "/".join(parts[:3])
    return {
        normalise(d) for d in candidates
        if any(str(f).startswith(prefix + "/") or str(f) == prefix + ".py"
               for f in importlib.metadata.distribution(d).files or [])
    }


def undeclared(imports: dict[str, set[str]], declared: set[str]) -> list[str]:
    return [
        f"{module} (imported by {', '.join(sorted(users))}; provided by {sorted(providers(module)) or 'nothing'})"
        for module, users in sorted(imports.items())
        if not providers(module) & declared
    ]


def test_every_imported_module_is_declared_in_requirements() -> None:
    imports = imported_modules()
    assert {"werkzeug.serving", "httpx", "psycopg2", "azure.functions"} <= set(imports)
    missing = undeclared(imports, declared_distributions())
    assert not missing, "imported but not declared in requirements*.txt:\n" + "\n".join(missing)


def test_what_the_deployed_app_imports_is_in_requirements_txt() -> None:
    """Azure installs requirements.txt only: the app's own imports must not lean on the dev list."""
    deployed = {m: users for m, users in imported_modules().items()
                if any(u == "function_app.py" or u.startswith("shared/") for u in users)}
    assert {"azure.functions", "httpx", "psycopg2", "tenacity"} <= set(deployed)
    missing = undeclared(deployed, declared_distributions(("requirements.txt",)))
    assert not missing, "imported by the deployed app but not in requirements.txt:\n" + "\n".join(missing)


def test_an_undeclared_import_is_caught() -> None:
    declared = declared_distributions() - {"werkzeug"}
    missing = undeclared(imported_modules(), declared)
    assert any(m.startswith("werkzeug.serving (imported by devtools/funchost/server.py") for m in missing), missing
