"""Quality benchmark under the standard SR protocol (Y-PSNR / SSIM, optional LPIPS); same as `progsr bench`.

    python benchmarks/quality.py --method bicubic --datasets Set5 Set14 BSD100 --scales 2 4 8 \
        --data-root ../shared/data/test
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from progsr.cli import run  # noqa: E402
from progsr.evaluation import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run(main, sys.argv[1:], "quality.py"))
