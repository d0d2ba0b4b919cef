"""Thin entry point for the progsr web app: `python app/app.py [--host H] [--port P] [--share] [--model PATH]`.

Everything lives in progsr.webapp (also reachable as `progsr app`); this file only runs it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from progsr.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["app", *sys.argv[1:]]))
