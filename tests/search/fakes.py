"""Fake ``fit`` functions for search tests where training is not the point.

The score is a smooth function of the learning rate (best at 1e-4), reported at
four evaluations like the real loop, so samplers and pruners have signal.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from pretune.errors import ConfigError
from pretune.errors import TrainingDiverged


@dataclass
class FakeResult:
    run_dir: Path
    model_dir: Path
    eval: dict
    train_samples: int
    trainable_params: int
    total_params: int = 1000
    seconds: float = 0.0


def score(lr: float, fraction: float = 1.0) -> float:
    return 0.5 + 0.45 * math.exp(-(math.log10(lr) + 4) ** 2) * fraction


def fake_fit(cfg, *, callback=None, overwrite=False, evals: int = 4):
    """Learning-curve-shaped fake; ``method.name == bitfit`` diverges; ``freeze`` with 4 layers is invalid."""
    if cfg.method.name == "bitfit":
        raise TrainingDiverged("loss became nan at step 3; lower train.lr")
    if cfg.method.name == "freeze" and cfg.method.train_top_layers > 3:
        raise ConfigError(f"method.train_top_layers={cfg.method.train_top_layers} but the model has 3 layers")
    per_eval = cfg.train.batch_size * 2
    if os.environ.get("FAKE_HANG_ALL_DIR"):  # every trial hangs; the file names the process running it
        (Path(os.environ["FAKE_HANG_ALL_DIR"]) / str(os.getpid())).touch()
        time.sleep(600)
    for i in range(1, evals + 1):
        if os.environ.get("FAKE_HANG_FILE") and i == 2 and Path(cfg.output).name == os.environ["FAKE_HANG_TRIAL"]:
            _hang(cfg)
        if callback:
            callback(i * 2, {"step": i * 2, "epoch": cfg.train.epochs * i / evals, "samples": i * per_eval,
                             "accuracy": score(cfg.train.lr, i / evals)})
    model_dir = Path(cfg.output) / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "params.json").write_text(json.dumps({"lr": cfg.train.lr}))
    trainable = cfg.lora.r * 100 if cfg.method.name == "lora" else 1000
    return FakeResult(Path(cfg.output), model_dir, {"accuracy": score(cfg.train.lr)}, evals * per_eval, trainable)


def _hang(cfg) -> None:
    """Signal the test that trial FAKE_HANG_TRIAL is mid-way, then hang (once) until the test SIGKILLs us."""
    flag = Path(os.environ["FAKE_HANG_FILE"])
    if not flag.exists():
        flag.write_text(str(Path(cfg.output).name))
        time.sleep(600)


def record_params_fit(cfg, *, callback=None, overwrite=False):
    """Writes what this rank trained with, then behaves like ``fake_fit``."""
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    rank = os.environ.get("RANK", "0")
    seen = {"lr": cfg.train.lr, "batch_size": cfg.train.batch_size, "method": cfg.method.name,
            "lora_r": cfg.lora.r, "pid": os.getpid()}
    (out / f"rank{rank}.json").write_text(json.dumps(seen))
    return fake_fit(cfg, callback=callback, overwrite=overwrite)


def barrier_fit(cfg, *, callback=None, overwrite=False):
    """``fake_fit`` that first waits (up to 2 min) until two processes have entered it.

    Makes the two-worker test independent of how fast the machine spawns the second worker.
    """
    folder = Path(os.environ["FAKE_BARRIER_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / str(os.getpid())).touch()
    deadline = time.time() + 120
    while len(list(folder.iterdir())) < 2 and time.time() < deadline:
        time.sleep(0.1)
    return fake_fit(cfg, callback=callback, overwrite=overwrite)
