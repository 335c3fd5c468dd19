"""The project as Dagster's ``dg`` and pip see it: one top-level package, every folder in it, definitions that load."""

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_package_folder_is_installed():
    setuptools = PYPROJECT["tool"]["setuptools"]
    folders = {name: folder for name, folder in setuptools["package-dir"].items()}
    found = {"crawl2serve"}
    for name, folder in folders.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            found.add(".".join([name, *rel.parts]) if rel.parts else name)
    assert found == set(setuptools["packages"]), f"pyproject.toml packages: add {found - set(setuptools['packages'])}"


def test_wheel_has_one_top_level_name(tmp_path):
    """``pip install .`` (the image) puts ``crawl2serve`` into site-packages, not ``assets``, ``serving``, …"""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("crawl2serve-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"crawl2serve"}, top
    for member in (
        "crawl2serve/definitions.py",
        "crawl2serve/assets/corpus/dedup.py",
        "crawl2serve/assets/corpus/data/iana_tlds.txt",
        "crawl2serve/pipelines/embedded.yaml",
        "crawl2serve/serving/gateway/app.py",
    ):
        assert member in names, member


def test_dg_check_defs():
    """What CI and ``dg dev`` load: ``dg check defs`` from the project's ``[tool.dg]``."""
    dg_cli = Path(sys.executable).with_name("dg")
    env = {**os.environ, "VIRTUAL_ENV": str(Path(sys.executable).parents[1])}
    proc = subprocess.run(
        [str(dg_cli), "check", "defs"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All definitions loaded successfully" in proc.stdout + proc.stderr
