"""Run-folder state: atomic checkpoints (with RNG states), init weights, replica digests and the metrics log."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import torch

from progsr.errors import UserError
from progsr.imageio import atomic_output

CHECKPOINT_FORMAT = "progsr.train.v1"


def checkpoint_dir(out: Path) -> Path:
    """The run's checkpoint folder."""
    return Path(out) / "checkpoints"


def list_checkpoints(out: Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    folder = checkpoint_dir(out)
    return sorted(folder.glob("ckpt_*.pt")) if folder.is_dir() else []


def load_checkpoint(path) -> dict:
    """A training checkpoint (plain tensors and containers only: loaded with weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle/zip errors of several types for a bad file
        raise UserError(f"{path}: not a readable training checkpoint ({str(err).splitlines()[0]})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: not a progsr training checkpoint")
    return state


def save_atomic(obj, path: Path) -> None:
    """torch.save through a temp file and a rename: a reader never sees half a checkpoint."""
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def rng_state() -> dict:
    """Python, numpy, torch (and CUDA) RNG states as plain tensors and containers."""
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)), "pos": np_state["state"]["pos"],
                  "has_gauss": np_state["has_gauss"], "gauss": np_state["gauss"]},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what rng_state() saved."""
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937", "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def newest_checkpoint(path) -> Path:
    """`path` itself, or the newest checkpoint of a run folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise UserError(f"{path}: no checkpoints in this run folder")
        return found[-1]
    return path


def read_init_weights(path) -> tuple[dict, dict]:
    """(generator config dict, state dict) from a shipped model's name (psnr, gan, ...), a .safetensors file
    or a training checkpoint's EMA generator."""
    from progsr.paths import WEIGHT_NAMES

    if str(path) in WEIGHT_NAMES and not Path(str(path)).exists():
        from progsr.models.io import shipped_model_path

        path = shipped_model_path(str(path))
    path = Path(path).expanduser()
    if path.suffix == ".safetensors":
        from progsr.models.io import load_generator

        model, _ = load_generator(path)
        return model.config.to_dict(), model.state_dict()
    state = load_checkpoint(newest_checkpoint(path))
    return state["config"]["generator"], state["G_ema"]


def weights_digest(*modules) -> str:
    """SHA-256 over the bytes of every parameter and buffer: equal digests mean bit-identical weights."""
    h = hashlib.sha256()
    for module in modules:
        for name, t in module.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def parse_record(line: str) -> dict | None:
    """One metrics.jsonl line as a dict, or None for a blank, truncated or otherwise unreadable line."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def read_metrics(path) -> list[dict]:
    """Every readable record of a metrics.jsonl file."""
    return [r for line in Path(path).read_text(encoding="utf-8").splitlines() if (r := parse_record(line)) is not None]


class MetricsLog:
    """metrics.jsonl (one JSON object per line), plus TensorBoard when it is installed; rank 0 only.

    A new run starts the file afresh; a resumed one drops what was logged after the checkpoint it resumes
    from (and any line a kill cut short), so each iteration is logged once.
    """

    def __init__(self, out: Path, resume_iteration: int | None):
        self.path = Path(out) / "metrics.jsonl"
        kept = []
        if resume_iteration is not None and self.path.exists():
            kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                    if (record := parse_record(line)) is not None and record.get("it", 0) <= resume_iteration]
        with atomic_output(self.path) as tmp:
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        self.file = open(self.path, "a", encoding="utf-8")
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(out) / "tensorboard"))
        except ImportError:
            pass

    def write(self, record: dict) -> None:
        """Append one record (and its numbers to TensorBoard)."""
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in record.items():
                if key != "it" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.tb.add_scalar(key, value, record["it"])

    def close(self) -> None:
        """Close the file (and TensorBoard)."""
        self.file.close()
        if self.tb is not None:
            self.tb.close()
