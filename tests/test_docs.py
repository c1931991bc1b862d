"""The documentation: the site builds with no warning, every command is in it, the Python
examples of the guides and the README run on the bundled samples, the README stays short, and
the repository speaks of itself as a product."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from geofuse.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md")) + [ROOT / "README.md"]
EXPECTED = re.compile(r"^# prints: (.*)$", re.M)  # a line an example must print, in order
TF_NOISE = ("I0000", "oneDNN", "cpu_feature_guard", "absl::InitializeLog")
# pages whose examples only run inference through geofuse, which hides TensorFlow's start-up
# messages (the others import Keras or train, where TensorFlow speaks for itself)
QUIET = ("README.md", "getting-started.md", "segmenting.md", "products.md")


def python_blocks(page: Path) -> list[str]:
    """The fenced ```python blocks of a Markdown page, in order."""
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), re.M | re.S)


@pytest.mark.slow
def test_site_builds_without_warnings(tmp_path: Path) -> None:
    out = tmp_path / "html"
    run = subprocess.run([sys.executable, "-m", "sphinx", "-W", "-n", "-q", "-b", "html",
                          str(DOCS), str(out)], cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    cli = (out / "cli.html").read_text()
    for name, command in main.commands.items():
        assert f'id="geofuse-{name}"' in cli, name
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--"):
                    assert opt in cli, f"{name} {opt}"
    api = (out / "api.html").read_text()
    for name in ("segment_scene", "predict_array", "segment_directory", "train", "evaluate",
                 "load_model", "SegmentConfig", "TrainConfig", "GeofuseError"):
        assert re.search(rf'id="geofuse\.[\w.]*\.{name}"', api), name


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.name)
def test_page_examples_run(page: Path, tmp_path: Path) -> None:
    """A page's Python blocks run in order, in one process, beside the bundled samples."""
    (tmp_path / "data_samples").symlink_to(ROOT / "data_samples")
    code = "\n".join(python_blocks(page))
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=900, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    printed = iter(run.stdout.splitlines())
    for expected in EXPECTED.findall(code):
        assert any(line == expected for line in printed), (expected, run.stdout)
    if page.name in QUIET:
        for noise in TF_NOISE:
            assert noise not in run.stderr, run.stderr[-3000:]


def test_readme_is_short_and_keeps_its_setup_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_commands.py"), "test"],
                         capture_output=True, text=True, check=True)
    assert run.stdout.startswith("python3 -m venv .venv && ")
    assert "pytest" in run.stdout


def test_version_is_in_the_changelog() -> None:
    run = subprocess.run([sys.executable, "-m", "geofuse.cli", "--version"], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    version = run.stdout.split()[-1]
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    # a released version has its heading; the next one is named in the Unreleased section
    unreleased = changelog.split("## [Unreleased]", 1)[1].split("\n## [", 1)[0]
    assert f"## [{version}]" in changelog or f"released as {version}" in unreleased


def test_docs_hold_no_result_files() -> None:
    assert not [p for p in DOCS.rglob("*") if p.suffix.lower() in (".json", ".csv")]


def test_every_study_has_a_report() -> None:
    studies = [p for p in (ROOT / "scripts" / "studies").iterdir() if p.is_dir()]
    assert studies
    for study in studies:
        report = (study / "REPORT.md").read_text()
        assert "chose" in report and "scored" in report, study.name


# Words that narrate how the repository was made, rather than what it does.
WORKLOG = re.compile(r"\b[Ss]essions? \d|\b[Ii]ssues? \d|\bround \d+ of work|`/tmp` script"
                     r"|\bthis round\b|\bgit commit\b.*-m")


def test_no_worklog_wording() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    found = []
    for name in tracked.stdout.splitlines():
        path = ROOT / name
        if path.suffix not in (".py", ".md", ".sh", ".toml", ".txt") or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if WORKLOG.search(line) and path != Path(__file__):
                found.append(f"{name}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_every_module_is_in_the_reference() -> None:
    """A new module joins docs/modules.md (or the API page), so autodoc checks its docstrings."""
    reference = (DOCS / "modules.md").read_text() + (DOCS / "api.md").read_text()
    documented = set(re.findall(r"automodule:: (geofuse[\w.]*)", reference))
    package = {".".join(p.relative_to(ROOT).with_suffix("").parts)
               for p in (ROOT / "geofuse").rglob("*.py") if p.name != "__main__.py"}
    package = {name.removesuffix(".__init__") for name in package} - {"geofuse"}
    assert sorted(package - documented) == []
