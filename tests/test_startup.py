"""`progsr --help` and `progsr upscale --help` answer without importing torch, numpy or Pillow."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROBE = """
import sys
from progsr.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
print("HEAVY", sorted(m for m in ("torch", "numpy", "PIL", "gradio", "onnxruntime") if m in sys.modules))
"""


@pytest.mark.parametrize("argv", [["--help"], ["upscale", "--help"], ["--version"]])
def test_help_imports_nothing_heavy(argv):
    proc = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY []"
    assert "usage" in proc.stdout or "progsr" in proc.stdout


def test_upscale_help_still_shows_the_limits():
    proc = subprocess.run([sys.executable, "-m", "progsr.cli", "upscale", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert "--max-pixels" in proc.stdout and "16777216" in proc.stdout and "--clean" in proc.stdout
