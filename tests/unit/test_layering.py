"""The layering contracts of pyproject.toml ([tool.importlinter]) hold, and they can fail.

The second test copies the packages into a scratch directory, adds one forbidden import
of each kind, and requires ``lint-imports`` to name every broken contract: a contract
that cannot break would pass the first test whatever the code did.
"""

import shutil
import subprocess
from pathlib import Path

from tests.services import ROOT, VENV_BIN

LINT_IMPORTS = str(VENV_BIN / "lint-imports")


def lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_the_layering_contracts_are_kept():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


def test_each_contract_breaks_on_a_forbidden_import(tmp_path: Path):
    for name in ("app", "tasks", "config"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    violations = {
        "tasks/core/jobstore.py": "import app.errors",  # tasks -> app
        "tasks/jobs/logs/job.py": "import tasks.jobs.webhooks.deliver",  # family -> family
        "tasks/core/registry.py": "import tasks.runtime.task",  # core -> runtime
        "app/health.py": "import kombu",  # the web talking AMQP
        "app/batch.py": "import tasks.core.publisher",  # publishing around the core
        "app/jobs.py": "import tasks.core.messages",  # the message contract outside the core
    }
    for path, line in violations.items():
        module = tmp_path / path
        module.write_text(module.read_text() + f"\n{line}  # noqa\n")
    result = lint(tmp_path)
    assert result.returncode != 0, result.stdout
    for contract in (
        "tasks and config never import the web BROKEN",
        "job families never import each other BROKEN",
        "the core never depends on the worker runtime BROKEN",
        "only the submission core publishes job messages BROKEN",
    ):
        assert contract in result.stdout, result.stdout
    assert "Contracts: 0 kept, 6 broken." in result.stdout, result.stdout
