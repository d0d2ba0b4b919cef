"""The scripts users run from a checkout start and parse their options (they have no other tests of their own)."""

import subprocess
import sys

import pytest

from progsr.paths import REPO_ROOT

SCRIPTS = ["benchmarks/quality.py", "benchmarks/speed.py", "benchmarks/crops.py", "benchmarks/app_load.py",
           "app/app.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_help_runs_from_the_checkout(script, tmp_path):
    # Run from an unrelated folder, as a user would, so imports must work from the script's own location.
    done = subprocess.run([sys.executable, str(REPO_ROOT / script), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
    assert "Traceback" not in done.stderr
