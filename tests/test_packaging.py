"""The install files agree with each other, and CI runs what the README says."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PIP = {"pytorch": "torch"}
NOT_PACKAGES = {"python", "pip"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    return {_name(r): r.replace(" ", "") for r in requirements}


def _environment_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    found = {}
    for item in env["dependencies"]:
        entries = item["pip"] if isinstance(item, dict) else [item]
        for entry in entries:
            if entry.startswith("-e"):
                continue
            name = CONDA_TO_PIP.get(_name(entry), _name(entry))
            if name not in NOT_PACKAGES:
                found[name] = re.sub(r"^[A-Za-z0-9_.\-]+", name, entry.replace(" ", ""))
    return found


def test_environment_yml_lists_the_same_packages_and_ranges_as_pyproject():
    pyproject, environment = _pyproject_requirements(), _environment_requirements()
    assert set(pyproject) == set(environment), (
        f"only in pyproject: {sorted(set(pyproject) - set(environment))}; "
        f"only in environment.yml: {sorted(set(environment) - set(pyproject))}"
    )
    for name, requirement in pyproject.items():
        assert requirement.lower() == environment[name].lower(), f"{name}: {requirement} vs {environment[name]}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- test-command[^>]*-->\s*```bash\n(.+?)\n", readme)
    assert match, "README.md must mark its test command with <!-- test-command ... -->"
    command = match.group(1).strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "test-command" in ci and "README.md" in ci, ".ci/run must read the command from README.md"
    assert command.startswith("python -m pytest")


def test_quick_start_has_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line for line in quick.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(commands) == 2 and commands[0].startswith("pip install -e") and "jupyter lab" in commands[1]


def test_every_notebook_is_in_the_course_map():
    readme = (ROOT / "README.md").read_text()
    for path in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"):
        assert f"notebooks/{path.name}" in readme, f"{path.name} is missing from the README course map"


def test_bundled_sample_is_packaged():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["course_utils"]
    assert "sample_data/*.npz" in patterns
    for name in ("mnist", "fashion-mnist", "pneumoniamnist"):
        path = ROOT / "course_utils" / "sample_data" / f"{name}.npz"
        assert path.is_file() and path.stat().st_size < 3_000_000
    assert (ROOT / "course_utils" / "sample_data" / "README.md").is_file()
