"""deploy.sh with stand-in `az` and `func` on PATH (tests/fakes) that record their arguments.

The health check and smoke test run for real: `--url` points deploy.sh at the app served by
the local host, on a real database, against the Polymarket stand-in.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, Upstream, reset_app

FAKES = Path(__file__).resolve().parent / "fakes"
SECRET_PASSWORD = "pg-S3cret-Passw0rd-9f1c"
SECRET_OPENAI_KEY = "sk-openai-t0p-secret-77aa"
CONFIG = """
AZ_LOCATION="westeurope"
AZ_RESOURCE_GROUP="rg-test"
FUNCTION_APP_NAME="func-test"
STORAGE_ACCOUNT="sttest"
APP_INSIGHTS_NAME="appi-test"
KEY_VAULT_NAME="kv-test"
POSTGRES_SERVER="psql-test"
POSTGRES_DATABASE="polymarket"
POSTGRES_ADMIN_USER="polyadmin"
CORS_ALLOWED_ORIGINS="https://app.example.com"
AZURE_OPENAI_ENDPOINT="https://example.openai.azure.com"
"""


def _all_functions() -> str:
    probe = ("import function_app;"
             "print(','.join('func-test/'+f.get_function_name() for f in function_app.app.get_functions()))")
    return subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A clean git checkout of what deploy.sh needs, so the dirty-tree check can be exercised."""
    target = tmp_path / "repo"
    target.mkdir()
    for name in ("deploy.sh", "test_local.sh", "function_app.py", "host.json"):
        shutil.copy2(ROOT / name, target / name)
    shutil.copytree(ROOT / "shared", target / "shared", ignore=shutil.ignore_patterns("__pycache__"))
    (target / "deploy").mkdir()
    (target / "deploy" / "test.env").write_text(CONFIG)
    (target / "deploy" / "prod.env").write_text(CONFIG)
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=target, check=True)
    subprocess.run([*git, "add", "-A"], cwd=target, check=True)
    subprocess.run([*git, "commit", "-qm", "snapshot"], cwd=target, check=True)
    return target


class Run:
    def __init__(self, result: subprocess.CompletedProcess[str], log: Path) -> None:
        self.code = result.returncode
        self.output = result.stdout + result.stderr
        self.calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def commands(self, verb: str) -> list[list[str]]:
        return [call for call in self.calls if verb in call[:5]]


@pytest.fixture
def deploy(repo: Path, tmp_path: Path) -> Iterator:
    state = tmp_path / "az-state.json"
    functions = _all_functions()

    def run(*args: str, env: dict[str, str] | None = None, log_name: str = "az.log") -> Run:
        log = tmp_path / log_name
        full_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "AZURE_OPENAI_"))},
            "PATH": f"{FAKES}{os.pathsep}{os.environ['PATH']}",
            "PYTHON": sys.executable,
            "FAKE_AZ_LOG": str(log),
            "FAKE_AZ_STATE": str(state),
            "FAKE_AZ_FUNCTIONS": functions,
            "HEALTH_ATTEMPTS": "3",
            "HEALTH_INTERVAL_S": "0",
            "CORS_ORIGIN": "https://app.example.com",  # what test_local.sh checks
            "POSTGRES_ADMIN_PASSWORD": SECRET_PASSWORD,
            "AZURE_OPENAI_API_KEY": SECRET_OPENAI_KEY,
            **(env or {}),
        }
        result = subprocess.run(
            ["bash", str(repo / "deploy.sh"), *args], cwd=repo, env=full_env, capture_output=True,
            text=True, timeout=300, stdin=subprocess.DEVNULL, check=False,
        )
        return Run(result, log)

    yield run


@pytest.fixture
def served_app(database_env: dict[str, str], upstream_env: Upstream, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    import function_app
    from devtools.funchost import LocalHost

    # As deploy.sh configures Azure: the platform's CORS list and the app's own setting.
    monkeypatch.setenv("CORS_ALLOWED_ORIGINS", "https://app.example.com")
    reset_app()
    with LocalHost(function_app.app, port=0, host_json=ROOT / "host.json", cors="https://app.example.com") as host:
        yield host.url


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_dry_run_prints_every_step_and_changes_nothing(deploy) -> None:
    run = deploy("test", "--create", "--dry-run", "--skip-tests")
    assert run.code == 0, run.output
    for expected in ("az group create", "az storage account create", "az monitor app-insights component create",
                     "az keyvault create", "az postgres flexible-server create", "pgbouncer.enabled",
                     "az functionapp create", "--flexconsumption-location", "--runtime-version 3.11",
                     "az role assignment create", "az keyvault secret set",
                     "az functionapp config appsettings set", "func azure functionapp publish func-test",
                     "--build remote", "test_local.sh"):
        assert expected in run.output, expected
    assert run.calls == []  # not one az or func call
    assert "nothing was changed" in run.output


def test_create_twice_is_idempotent_and_deploys(deploy, served_app: str) -> None:
    first = deploy("test", "--create", "--skip-tests", "--url", served_app, log_name="first.log")
    assert first.code == 0, first.output
    creates = [" ".join(call[:4]) for call in first.commands("create")]
    assert any(c.startswith("group create") for c in creates)
    assert any(c.startswith("postgres flexible-server create") for c in creates)
    assert any(c.startswith("functionapp create") for c in creates)
    assert ["func", "azure", "functionapp", "publish", "func-test", "--python", "--build", "remote"] in first.calls
    assert "PASS" in first.output and "FAIL " not in first.output  # test_local.sh ran against the app
    settings = next(call for call in first.calls if call[:4] == ["functionapp", "config", "appsettings", "set"])
    assert "POSTGRES_PORT=6432" in settings and "POSTGRES_SSLMODE=require" in settings
    assert any(s.startswith("POSTGRES_PASSWORD=@Microsoft.KeyVault(") for s in settings)

    second = deploy("test", "--create", "--skip-tests", "--url", served_app, log_name="second.log")
    assert second.code == 0, second.output
    assert second.commands("create") == []  # everything exists: nothing is created again
    assert "exists" in second.output


def test_secrets_never_reach_a_command_line_or_the_output(deploy, served_app: str) -> None:
    run = deploy("test", "--create", "--skip-tests", "--url", served_app)
    assert run.code == 0, run.output
    flat = json.dumps(run.calls)
    for secret in (SECRET_PASSWORD, SECRET_OPENAI_KEY):
        assert secret not in flat
        assert secret not in run.output
    create = next(call for call in run.calls if call[:3] == ["postgres", "flexible-server", "create"])
    password_arg = create[create.index("--admin-password") + 1]
    assert password_arg.startswith("@")  # read from a file by the Azure CLI
    assert not Path(password_arg[1:]).exists()  # and that file is gone


def test_not_logged_in_fails_before_doing_anything(deploy) -> None:
    run = deploy("test", "--skip-tests", env={"FAKE_AZ_LOGGED_OUT": "1"})
    assert run.code != 0
    assert "not logged in" in run.output
    assert [call for call in run.calls if call[:2] != ["account", "show"]] == []


def test_health_never_ready_fails(deploy) -> None:
    run = deploy("test", "--skip-tests", "--url", _closed_port_url())
    assert run.code != 0
    assert "did not answer 200 after 3 attempts" in run.output


def test_missing_function_after_deploy_fails(deploy, served_app: str) -> None:
    run = deploy("test", "--skip-tests", "--url", served_app, env={"FAKE_AZ_FUNCTIONS": "func-test/health_check"})
    assert run.code != 0
    assert "missing functions" in run.output


def test_failed_publish_fails(deploy) -> None:
    run = deploy("test", "--skip-tests", env={"FAKE_FUNC_EXIT": "1"})
    assert run.code != 0


def test_dirty_tree_needs_force(deploy, repo: Path, served_app: str) -> None:
    (repo / "function_app.py").write_text((repo / "function_app.py").read_text() + "\n# local edit\n")
    refused = deploy("test", "--skip-tests", "--url", served_app)
    assert refused.code != 0 and "uncommitted changes" in refused.output
    forced = deploy("test", "--skip-tests", "--force", "--url", served_app)
    assert forced.code == 0, forced.output


def test_prod_needs_confirmation(deploy) -> None:
    run = deploy("prod", "--skip-tests")
    assert run.code != 0 and "--yes" in run.output
    assert not any(call and call[0] == "func" for call in run.calls)


def test_unknown_environment_and_bad_options(deploy) -> None:
    assert deploy("nowhere", "--skip-tests").code != 0
    assert deploy("test", "--bogus").code == 2


def test_an_untracked_names_file_is_not_an_uncommitted_change(deploy, repo: Path, served_app: str) -> None:
    """deploy.sh itself lets deploy/<env>.env through, even where no .gitignore hides it."""
    (repo / "deploy" / "staging.env").write_text(CONFIG)
    assert "?? deploy/staging.env" in _git(repo, "status", "--porcelain")
    run = deploy("test", "--skip-tests", "--url", served_app)
    assert run.code == 0, run.output


# --- the README's Deploying section, as written, in a fresh clone ------------------------------

# A few quick test files for the `make test` step deploy.sh runs: the real Makefile and pytest in
# the clone, without the whole suite inside this test.
CLONE_PYTEST_ARGS = "-q -p no:cacheprovider tests/test_standalone.py tests/test_gamma_markets.py"
MARK = "### README command "


def _git(where: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=where, capture_output=True, text=True, check=True).stdout


def readme_deploy_commands() -> list[str]:
    """The lines of the README's First deploy block, then its later `./deploy.sh dev`, verbatim."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Deploying\n", 1)[1].split("\n## ", 1)[0]
    flags = re.DOTALL | re.MULTILINE
    blocks = {
        title.strip(): [line for code in re.findall(r"^```sh\n(.*?)^```", body, flags)
                        for line in code.splitlines() if line.strip()]
        for title, body in re.findall(r"^### ([^\n]+)\n(.*?)(?=^### |\Z)", section, flags)
    }
    later = [line for line in blocks["Later deploys"] if re.match(r"\./deploy\.sh dev(\s|$)", line)]
    return blocks["First deploy"] + later


def _without_comment(line: str) -> str:
    return re.sub(r"\s+#.*$", "", line).strip()


def _mirror_venv(venv: Path) -> None:
    """The interpreter running this test, as the clone's .venv, with the clone's own install stamp
    (newer than its requirements files, so `make test` installs nothing and touches no shared venv)."""
    venv.mkdir()
    prefix = Path(sys.prefix)
    if prefix != Path(sys.base_prefix):
        for entry in prefix.iterdir():
            if entry.name != ".installed":
                (venv / entry.name).symlink_to(entry)
    else:
        (venv / "bin").mkdir()
        (venv / "bin" / "python").symlink_to(sys.executable)
    (venv / ".installed").touch()


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """`git clone` of this repository, plus what is changed here and not yet committed (so the test
    checks this work tree), committed in the clone: a clean tree, as a fresh clone has."""
    target = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(target)], check=True)
    subprocess.run(["git", "checkout", "-q", "--detach", _git(ROOT, "rev-parse", "HEAD").strip()],
                   cwd=target, check=True)
    changed = [n for n in _git(ROOT, "diff", "--name-only", "--no-renames", "-z", "HEAD").split("\0") if n]
    for name in changed:
        if (ROOT / name).exists():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
        else:
            (target / name).unlink(missing_ok=True)
    if changed:
        git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
        subprocess.run([*git, "add", "-A", "--", *changed], cwd=target, check=True)
        subprocess.run([*git, "commit", "-qm", "uncommitted changes of the work tree"], cwd=target, check=True)
    _mirror_venv(target / ".venv")
    assert _git(target, "status", "--porcelain") == ""
    return target


def _clone_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items()
                 if not k.startswith(("POSTGRES_", "AZURE_OPENAI_", "MAKE", "MFLAGS"))
                 and k not in ("PYTHON", "PYTEST_ARGS", "PYTEST_ADDOPTS")}
    return {
        **inherited,
        "PATH": f"{FAKES}{os.pathsep}{os.environ['PATH']}",
        "FAKE_AZ_LOG": str(tmp_path / "az.log"),
        "FAKE_AZ_STATE": str(tmp_path / "az-state.json"),
        "FAKE_AZ_FUNCTIONS": _all_functions(),
        "HEALTH_ATTEMPTS": "3",
        "HEALTH_INTERVAL_S": "0",
        "CORS_ORIGIN": "https://app.example.com",  # what test_local.sh checks; example.env allows it
        "PYTEST_ARGS": CLONE_PYTEST_ARGS,
        **extra,
    }


def _run_script(clone: Path, env: dict[str, str], commands: list[str]) -> subprocess.CompletedProcess[str]:
    script = "\n".join(["set -euo pipefail", "exec 2>&1"]
                       + [f"echo {shlex.quote(MARK + str(i))}\n{cmd}" for i, cmd in enumerate(commands)])
    return subprocess.run(["bash", "-c", script], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL, check=False)


def test_readme_deploy_commands_work_in_a_fresh_clone(clone: Path, served_app: str, tmp_path: Path) -> None:
    commands = readme_deploy_commands()
    plain = [_without_comment(c) for c in commands]
    # The documented path, in this order (the exports before anything that needs them).
    steps = ["cp deploy/example.env deploy/dev.env", "./deploy.sh dev --create --dry-run",
             "./deploy.sh dev --create", "./deploy.sh dev"]
    assert [c for c in plain if c in steps] == steps, plain
    assert plain.index("./deploy.sh dev --create") > max(i for i, c in enumerate(plain) if c.startswith("export "))
    # Run as written; `--url` only adds where to verify (the app on the local host, not Azure).
    runnable = [f"{_without_comment(c)} --url {served_app}" if c.startswith("./deploy.sh ") else c
                for c in commands]
    result = _run_script(clone, _clone_env(tmp_path), runnable)
    output = result.stdout
    assert result.returncode == 0, output[-6000:]
    parts = dict(zip(plain, re.split(re.escape(MARK) + r"\d+\n", output)[1:], strict=True))

    assert "dry run: nothing was changed" in parts["./deploy.sh dev --create --dry-run"]
    calls = [json.loads(line) for line in (tmp_path / "az.log").read_text().splitlines()]
    publishes = [c for c in calls if c[:4] == ["func", "azure", "functionapp", "publish"]]
    assert publishes == [["func", "azure", "functionapp", "publish", "func-polymarket-api-dev",
                          "--python", "--build", "remote"]] * 2  # --create, then the later deploy
    for step in ("./deploy.sh dev --create", "./deploy.sh dev"):
        out = parts[step]
        assert "uncommitted changes" not in out
        assert f"running the test suite (make test PYTEST_ARGS={CLONE_PYTEST_ARGS})" in out
        # The clone's own tests ran: all passed, none failed or skipped (pytest would list those).
        summary = re.search(r"^(\d+) passed in [\d.]+s", out, re.MULTILINE)
        assert summary and int(summary[1]) > 10, out
        assert "PASS" in out and "FAIL " not in out  # test_local.sh against the app
        assert f"deployed func-polymarket-api-dev (dev) and verified {served_app}" in out
    assert "creating resource group rg-polymarket-api-dev" in parts["./deploy.sh dev --create"]
    # The names file the README makes is git-ignored; the example stays tracked.
    assert _git(clone, "status", "--porcelain") == ""
    assert _git(clone, "check-ignore", "deploy/dev.env").strip() == "deploy/dev.env"
    assert _git(clone, "ls-files", "deploy").split() == ["deploy/example.env"]


def test_in_a_clone_anything_but_a_names_file_still_blocks(clone: Path, tmp_path: Path) -> None:
    env = _clone_env(tmp_path)
    (clone / "deploy" / "dev.env").write_text((clone / "deploy" / "example.env").read_text())
    (clone / "deploy" / "dev.env.bak").write_text("x")
    (clone / "notes.txt").write_text("x")
    result = _run_script(clone, env, ["./deploy.sh dev"])
    assert result.returncode != 0
    assert "uncommitted changes" in result.stdout
    assert "?? deploy/dev.env.bak" in result.stdout and "?? notes.txt" in result.stdout
    assert "?? deploy/dev.env\n" not in result.stdout
    (clone / "deploy" / "dev.env.bak").unlink()
    (clone / "notes.txt").unlink()
    # Clean now: it gets past the check, and a failing `make test` stops it before anything is published.
    failing = _run_script(clone, {**env, "PYTEST_ARGS": "-q tests/test_gamma_markets.py -k no_such_test"},
                          ["./deploy.sh dev"])
    assert failing.returncode != 0
    assert "uncommitted changes" not in failing.stdout
    assert "tests failed; fix them or pass --skip-tests" in failing.stdout
    calls = (tmp_path / "az.log").read_text() if (tmp_path / "az.log").exists() else ""
    assert '"func"' not in calls


def test_scripts_are_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    result = subprocess.run(
        [shellcheck, "-x", "deploy.sh", "test_local.sh", ".ci/run"], cwd=ROOT, capture_output=True, text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
