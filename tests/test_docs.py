"""Documents cite only what the repository holds: every benchmarks/results/ file named in prose is tracked by git."""

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RESULT_PATH = re.compile(r"benchmarks/results/[A-Za-z0-9_.\-/]*[A-Za-z0-9_]")


def tracked_files() -> set[str]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("not a git checkout")
    return set(out.stdout.splitlines())


def cited_results(text: str) -> set[str]:
    """benchmarks/results/ paths in a markdown text outside fenced code blocks (a command's --out is no citation)."""
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    return {m.group(0) for m in RESULT_PATH.finditer(prose)}


def test_cited_paths_are_found_outside_code_only():
    text = "see `benchmarks/results/a.json` and benchmarks/results/b_x4.png.\n```\nrun --out benchmarks/results/c\n```"
    assert cited_results(text) == {"benchmarks/results/a.json", "benchmarks/results/b_x4.png"}


def test_every_cited_benchmark_result_is_tracked():
    tracked = tracked_files()
    docs = [p for p in tracked if p.endswith(".md")]
    missing = sorted(f"{doc}: {path}" for doc in docs
                     for path in cited_results((REPO / doc).read_text(encoding="utf-8"))
                     if path not in tracked and not any(t.startswith(path + "/") for t in tracked))
    assert not missing, "cited but not committed:\n" + "\n".join(missing)
