"""The registered model's pyfunc class imports quietly: every Dagster step process imports it (the definitions)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_importing_the_pyfunc_model_warns_nothing():
    """main's predict had no type hint: MLflow warned "Add type hints to the `predict` method" once per step
    process, 18 times in a `./dev.sh main` console."""
    proc = subprocess.run(
        [sys.executable, "-W", "always::UserWarning", "-c", "import crawl2serve.assets.release.pyfunc"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "predict" not in proc.stderr, proc.stderr
