"""What a training run writes to its folder (config, metrics, validation, samples, checkpoints), and its loss log."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import torch.distributed as dist

from progsr.training.checkpoints import (CHECKPOINT_FORMAT, MetricsLog, checkpoint_dir, list_checkpoints,
                                         read_metrics, rng_state, save_atomic, weights_digest)
from progsr.training.config import TrainConfig


class RunWriter:
    """What rank 0 writes to the run folder: config, metrics, validation records, samples, checkpoints."""

    def __init__(self, out: Path, cfg: TrainConfig, proc, models, data, history: list,
                 start: int, resumed: bool, run_info: dict):
        self.out, self.cfg, self.proc, self.models, self.data = out, cfg, proc, models, data
        self.history, self.run_info, self.metrics = history, run_info, None
        out.mkdir(parents=True, exist_ok=True)
        if proc.is_main:
            checkpoint_dir(out).mkdir(exist_ok=True)
            (out / "samples").mkdir(exist_ok=True)
            (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n", encoding="utf-8")
            self.metrics = MetricsLog(out, start if resumed else None)

    def write(self, record: dict) -> None:
        """One metrics record (rank 0)."""
        if self.metrics is not None:
            self.metrics.write(record)

    def checkpoint(self, iteration: int, train_seconds: float) -> None:
        """All ranks check their replicas agree; rank 0 writes the checkpoint and prunes old ones."""
        m, world_size = self.models, self.proc.world_size
        if world_size > 1:
            digests = [None] * world_size
            dist.all_gather_object(digests, weights_digest(*m.modules()))
            if len(set(digests)) != 1:
                raise RuntimeError(f"DDP replicas diverged at iteration {iteration}: {digests}")
            self.write({"it": iteration, "replica_sha256": digests})
        if not self.proc.is_main:
            return
        state = {
            "format": CHECKPOINT_FORMAT, "iteration": iteration, "config": dataclasses.asdict(self.cfg),
            "run": {**self.run_info, "train_seconds": train_seconds, "validation": self.history},
            "G": m.G.state_dict(), "G_ema": m.G_ema.state_dict(), "opt_G": m.opt_G.state_dict(),
            "D": m.D.state_dict() if m.D is not None else None,
            "opt_D": m.opt_D.state_dict() if m.D is not None else None, "rng": rng_state(),
        }
        save_atomic(state, checkpoint_dir(self.out) / f"ckpt_{iteration:08d}.pt")
        for old in list_checkpoints(self.out)[: -self.cfg.keep_ckpts]:
            old.unlink(missing_ok=True)

    def validate(self, iteration: int, stage: int, alpha: float, train_seconds: float, val_lpips) -> None:
        """Validate the EMA generator, log it, write a sample grid and the learning curve (rank 0)."""
        from progsr.training.validation import plot_learning_curve, save_sample_grid, validate

        if not self.proc.is_main or not self.data.val_set:
            return
        G_ema, device = self.models.G_ema, self.proc.device
        max_scale, num_stages = G_ema.config.max_scale, G_ema.config.num_stages
        record = {"it": iteration, "samples": iteration * self.cfg.batch_size * self.proc.world_size, "stage": stage,
                  "alpha": alpha, "time": round(train_seconds, 3),
                  **validate(G_ema, self.data.val_set, device, 2**stage, alpha, val_lpips)}
        self.history.append(record)
        self.write(record)
        save_sample_grid(G_ema, self.data.val_images, self.out / "samples" / f"it_{iteration:08d}.png", max_scale,
                         alpha if stage == num_stages else 1.0, device)
        plot_learning_curve(read_metrics(self.metrics.path), self.out / "learning_curve.png")

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()


class LossLog:
    """Loss sums since the last log line, kept on the device (no sync until the line is written)."""

    def __init__(self, train_seconds: float):
        self.sums: dict[str, tuple] = {}
        self.window_start, self.window_iters = train_seconds, 0

    def add(self, terms: dict) -> None:
        for key, value in terms.items():
            total, count = self.sums.get(key, (0.0, 0))
            self.sums[key] = (total + value.detach().float(), count + 1)
        self.window_iters += 1

    def means(self, done: int) -> dict:
        """The mean of each loss over the window (waits for the device); a RuntimeError if one is not finite."""
        means = {f"loss/{k}": float(v) / n for k, (v, n) in self.sums.items()}
        if not all(math.isfinite(v) for v in means.values()):
            raise RuntimeError(f"training diverged at iteration {done}: {means}")
        return means

    def rate(self, train_seconds: float) -> float:
        """Iterations per second of training time over the window; starts the next window."""
        it_s = self.window_iters / max(1e-9, train_seconds - self.window_start)
        self.sums, self.window_start, self.window_iters = {}, train_seconds, 0
        return it_s
