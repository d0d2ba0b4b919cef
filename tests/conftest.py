import os
import tempfile

import numpy as np
import pytest
import torch

from progsr.paths import shared_dir

# Keep the suite deterministic and polite on a 2-core machine (OMP_NUM_THREADS=1 while a training run shares it).
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session", autouse=True)
def _private_temp_dir(tmp_path_factory):
    """What the suite and the libraries it drives (gradio_client's downloads, the app's request folders,
    subprocesses) write to "the temp dir" goes under pytest's own base temp, not the system's."""
    root = tmp_path_factory.getbasetemp()  # every tmp_path is inside it, so gradio accepts files from them
    patch = pytest.MonkeyPatch()
    patch.setenv("TMPDIR", str(root))
    patch.setenv("GRADIO_TEMP_DIR", str(root / "gradio"))
    patch.setattr(tempfile, "tempdir", str(root))
    yield root
    patch.undo()


@pytest.fixture
def shared():
    """Path to ../shared (data, backbones); skips the test when it is absent."""
    path = shared_dir()
    if path is None:
        pytest.skip("../shared is not available (set PROGSR_SHARED to point at it)")
    return path


@pytest.fixture
def one_thread():
    """One torch thread for the test: two OpenMP threads on 2 shared, busy cores spin-wait each other and run
    10x slower; one is steady."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No test may touch the network or the user's caches: downloads raise, TORCH_HOME is empty."""

    def no_download(url, *args, **kwargs):
        raise OSError(f"network disabled in tests ({url})")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("PROGSR_BACKBONES", raising=False)
