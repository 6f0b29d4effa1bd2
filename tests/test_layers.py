"""The rooms keep their floors: ``lint-imports`` checks the contracts in pyproject.toml."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    command = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    return subprocess.run([command, "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_every_package_keeps_its_floor():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " broken" in result.stdout and "0 broken" in result.stdout


def test_an_import_back_up_a_floor_is_caught(tmp_path):
    """The contracts can fail: a copy of the tree where the matcher interface imports the paper's matcher
    (the cycle ``batching -> engine -> prompt -> batching`` of the flat package) is refused."""
    tree = tmp_path / "tree"
    for name in ("sdcorr", "callbacks", "datamodules"):
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree)
    base = tree / "sdcorr" / "matchers" / "base.py"
    base.write_text(base.read_text() + "\nfrom sdcorr.matchers import prompt  # noqa: E402,F401\n")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports_command; "
            "sys.exit(lint_imports_command(['--no-cache']))",
        ],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(tree), "PATH": ""},
    )
    assert result.returncode != 0, result.stdout
    assert "sdcorr.matchers.base -> sdcorr.matchers.prompt" in result.stdout
