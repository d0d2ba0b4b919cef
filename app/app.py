"""Thin entry point for the progsr web app: `python app/app.py [--host H] [--port P] [--share] [--model PATH]`.

Everything lives in progsr.webapp (also reachable as `progsr app`); this file only runs it.
"""

import sys

from progsr.cli import main

if __name__ == "__main__":
    sys.exit(main(["app", *sys.argv[1:]]))
