"""Evaluation: batched, length-sorted inference; metrics plus the mean loss."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import tasks
from ..data import Encoded, eval_batches, place_outputs
from ..runtime import CPU, Runtime
from ..tasks import TaskSpec


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inputs for the model: labels removed; an all-ones mask dropped so attention skips masking."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if bool(inputs["attention_mask"].all()):
        inputs.pop("attention_mask")
    return inputs


def task_outputs(task: tasks.Task, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The outputs ``task`` reads: its own ``forward``, else the model's logits."""
    if task.forward is not None:
        return task.forward(model, batch)
    return model(**model_inputs(batch)).logits


@torch.no_grad()
def predict_outputs(model: nn.Module, enc: Encoded, spec: TaskSpec, batch_size: int, pad_id: int,
                    runtime: Runtime = CPU) -> np.ndarray:
    """Logits in the original order, (N, C) per row or (total_tokens, C) per token (``data.place_outputs``),
    batches built by ``spec``'s task, on ``runtime``'s device and in its precision."""
    task = tasks.get(spec.task)
    was_training = model.training
    model.eval()
    out = None
    for rows in eval_batches(enc.lengths, batch_size):
        batch = runtime.to_device(task.collate(enc, rows, pad_id))
        with runtime.autocast():
            logits = task_outputs(task, model, batch).float().cpu().numpy()
        out = place_outputs(out, enc, rows, logits)
    model.train(was_training)
    return out if out is not None else np.zeros((0, 1), dtype=np.float32)


def evaluate(model: nn.Module, enc: Encoded, spec: TaskSpec, batch_size: int, pad_id: int,
             runtime: Runtime = CPU) -> dict[str, float]:
    """The task's metrics and its ``loss`` on a labelled set."""
    task = tasks.get(spec.task)
    outputs = predict_outputs(model, enc, spec, batch_size, pad_id, runtime)
    metrics = task.metrics(outputs, enc, spec)
    metrics["loss"] = float(task.loss(torch.from_numpy(outputs), torch.from_numpy(enc.labels)))
    return metrics
