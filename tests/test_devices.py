import pytest
import torch

from progsr.devices import resolve_device
from progsr.errors import UserError


def test_auto_is_the_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")


def test_auto_under_torchrun_picks_the_local_rank_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert resolve_device("auto", local_rank=2) == torch.device("cuda", 2)
    assert resolve_device("auto", local_rank=5) == torch.device("cuda", 1)


@pytest.mark.parametrize("name", ["gpu0", "cuda:x", ""])
def test_bad_names_are_one_line_user_errors(name):
    with pytest.raises(UserError, match="--device"):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_named_cuda_without_a_gpu_is_a_user_error():
    with pytest.raises(UserError, match="not usable here"):
        resolve_device("cuda")
