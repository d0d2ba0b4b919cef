"""Turning --device and --precision names into a torch.device and dtype, the same way everywhere."""

from __future__ import annotations

import torch

from progsr.errors import UserError

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str | None = "auto", local_rank: int = 0) -> torch.device:
    """'auto' is this process's CUDA GPU (cuda:LOCAL_RANK under torchrun), else the CPU; a named device must work here."""
    if name in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UserError(f"--device {name}: not a device name (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if len(reason) > 120:  # torch explains some devices in paragraphs: keep the first sentence
            reason = reason.split(". ")[0][:117].rstrip() + "..."
        raise UserError(f"--device {name}: not usable here ({reason})") from None
    return device


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """'auto' -> fp32 on CPU, bf16 on CUDA where supported else fp16."""
    if precision in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision}: choose auto, fp32, fp16 or bf16")
    return PRECISIONS[precision]
