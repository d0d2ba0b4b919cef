"""Scale <-> stage: a model of n 2x stages upscales by 2, 4, ..., 2^n; stage k (1-based) makes scale 2^k."""

from __future__ import annotations

from progsr.errors import UserError


def scale_of(stage: int) -> int:
    """The scale that stage `stage` (1-based) produces: 2 ** stage."""
    return 2 ** int(stage)


def stage_of(scale: int) -> int:
    """The stage (1-based) that produces `scale`: log2(scale); a ValueError unless scale is a power of two >= 2."""
    scale = int(scale)
    if scale < 2 or scale & (scale - 1):
        raise ValueError(f"a model's scale is a power of two >= 2, got {scale}")
    return scale.bit_length() - 1


def scales_up_to(num_stages: int) -> tuple[int, ...]:
    """Every scale of a model with `num_stages` stages: (2, 4, 8) for 3."""
    return tuple(scale_of(k) for k in range(1, int(num_stages) + 1))


def check_scale(scale, scales) -> None:
    """A one-line UserError unless `scale` is one of `scales`; a factor below the largest points to --outscale."""
    if scale in scales:
        return
    names = [str(s) for s in scales]
    choices = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]
    hint = f" (for x{scale:g} use --outscale {scale:g})" if 0 < scale < max(scales) else ""
    raise UserError(f"--scale {scale}: not supported; choose {choices}{hint}")
