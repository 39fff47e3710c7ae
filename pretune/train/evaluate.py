"""Evaluation: batched, length-sorted inference; metrics plus the mean loss."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from ..data import Encoded, TaskSpec, collate, eval_batches
from ..metrics import compute_metrics


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inputs for the model: labels removed; an all-ones mask dropped so attention skips masking."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if bool(inputs["attention_mask"].all()):
        inputs.pop("attention_mask")
    return inputs


def task_loss(logits: torch.Tensor, labels: torch.Tensor, task: str) -> torch.Tensor:
    """Mean cross-entropy (classification) or squared error (regression), in fp32."""
    if task == "regression":
        return nn.functional.mse_loss(logits.float().squeeze(-1), labels.float())
    return nn.functional.cross_entropy(logits.float(), labels)


def autocast(enabled: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


@torch.no_grad()
def predict_outputs(model: nn.Module, enc: Encoded, batch_size: int, pad_id: int, bf16: bool = False) -> np.ndarray:
    """Logits (N, C) in the original row order."""
    was_training = model.training
    model.eval()
    out = None
    for rows in eval_batches(enc.lengths, batch_size):
        batch = collate(enc, rows, pad_id)
        with autocast(bf16):
            logits = model(**model_inputs(batch)).logits.float().numpy()
        if out is None:
            out = np.zeros((len(enc), logits.shape[-1]), dtype=np.float32)
        out[rows] = logits
    model.train(was_training)
    return out if out is not None else np.zeros((0, 1), dtype=np.float32)


def evaluate(model: nn.Module, enc: Encoded, spec: TaskSpec, batch_size: int, pad_id: int,
             bf16: bool = False) -> dict[str, float]:
    """Task metrics and ``loss`` on a labelled set."""
    outputs = predict_outputs(model, enc, batch_size, pad_id, bf16)
    logits = torch.from_numpy(outputs)
    labels = torch.from_numpy(enc.labels)
    metrics = compute_metrics(spec.task, outputs, enc.labels, spec.num_labels)
    metrics["loss"] = float(task_loss(logits, labels, spec.task))
    return metrics
