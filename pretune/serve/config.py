"""The settings of ``pretune serve``, checked in one place (every problem named with its flag)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Optional

from ..errors import ConfigError

ON_LONG = ("truncate", "refuse")
DEFAULT_MAX_LENGTH = 128  # as pretune predict; lowered to the model's limit when that is smaller


@dataclass
class ServeConfig:
    """How one server process loads its model and answers."""

    path: str  # a model folder, a variant folder, or a pretune run / compress folder (its recommended variant)
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1  # server processes, each with its own copy of the model
    max_batch_size: int = 32  # texts per model call at most
    max_wait_ms: float = 5.0  # how long the oldest waiting text waits for others to share its model call
    max_length: Optional[int] = None  # tokens per text; None: DEFAULT_MAX_LENGTH or the model's limit if lower
    on_long: str = "truncate"  # a text over max_length: truncate (token classification: windows) or refuse
    max_body_bytes: int = 1_000_000
    max_texts: int = 256  # texts per request
    max_queue: int = 4096  # texts waiting for the model at most; more: 503, retry later
    token: Optional[str] = None  # bearer token required on every route but /health
    threads: int = 2  # CPU threads of the model, per worker
    device: str = "cpu"
    precision: str = "fp32"
    shutdown_timeout: float = 30.0  # seconds requests in flight get to finish after SIGTERM

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ServeConfig":
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def check(cfg: ServeConfig) -> None:
    """Every out-of-range setting, in one error naming the flags.

    Raises:
        ConfigError: a count or limit below its minimum, an unknown --on-long, or an empty token.
    """
    problems = []
    for name, low in (("workers", 1), ("max_batch_size", 1), ("max_body_bytes", 64), ("max_texts", 1),
                      ("max_queue", 1), ("threads", 1), ("max_length", 2)):
        value = getattr(cfg, name)
        if value is not None and value < low:
            problems.append(f"--{name.replace('_', '-')} must be >= {low}, got {value}")
    for name in ("max_wait_ms", "shutdown_timeout"):
        if getattr(cfg, name) < 0:
            problems.append(f"--{name.replace('_', '-')} must be >= 0, got {getattr(cfg, name)}")
    if not 0 <= cfg.port <= 65535:
        problems.append(f"--port must be 0..65535, got {cfg.port}")
    if cfg.max_queue < cfg.max_texts:
        problems.append(f"--max-queue {cfg.max_queue} is below --max-texts {cfg.max_texts}: a full request could "
                        "never be queued")
    if cfg.on_long not in ON_LONG:
        problems.append(f"--on-long must be one of {', '.join(ON_LONG)}, got {cfg.on_long!r}")
    if cfg.token is not None and not cfg.token.strip():
        problems.append("--token (or PRETUNE_SERVE_TOKEN) is empty; give a token or unset it")
    if problems:
        raise ConfigError("; ".join(problems))
