"""``pretune eval`` and ``pretune predict``: metrics of a saved model on a labelled file, predictions for any file.

The saved model's task (``config.json``) decides how the file is read, what the metrics are and what a
prediction row holds.
"""

from __future__ import annotations

from contextlib import nullcontext

from .. import tasks
from ..config import DataConfig, ModelConfig
from ..errors import ConfigError
from ..models import load_finetuned, load_for_task
from ..models.fastpath import first_token_only
from ..runtime import resolve, set_threads
from ..train import predict_outputs


def load_as(model_dir: str, task: str | None = None):
    """(model, tokenizer, spec): a folder written by ``pretune fit`` read as its saved task; with ``task``, any model
    (a base model, a .gguf file, a packaged name) loaded with that task's head, for a task whose head is the
    model's own (a language model's).

    Raises:
        ConfigError: ``task`` is one whose head is made by training.
    """
    if task is None:
        return load_finetuned(model_dir)
    chosen = tasks.get(task)
    if not chosen.pretrained_head:
        raise ConfigError(f"--task {task}: a {task} head is made by training; evaluate a model folder that "
                          "pretune fit wrote for it, without --task")
    spec = tasks.TaskSpec(chosen.name)
    model, tokenizer = load_for_task(ModelConfig(path=model_dir), spec)
    model.eval()
    return model, tokenizer, spec


def _runner_outputs(runner, enc, spec, batch_size: int, pad_id: int):
    """The task's outputs of ``enc`` from any runner (PyTorch, a PyTorch variant, ONNX Runtime), in row order;
    the bench harness's own eval pass, so eval, predict and bench read a model the same way."""
    from ..bench.harness import _eval_pass
    from ..bench.runtimes import TorchRunner

    model = runner.model if isinstance(runner, TorchRunner) else None
    with first_token_only(model) if model is not None else nullcontext():  # same outputs, less work
        outputs, _ = _eval_pass(runner, enc, pad_id, batch_size, tasks.get(spec.task))
    return outputs


def open_model(model_dir: str, threads: int | None, rt):
    """(runner, tokenizer, spec) of any folder ``pretune.compress.formats.locate`` accepts: a tuned model, a
    variant that compress wrote (ONNX, int8, pruned, distilled), or a run folder (its recommended variant)."""
    import torch

    from ..bench.runtimes import load_runner
    from ..models import spec_of

    runner, config, tokenizer = load_runner(model_dir, threads or torch.get_num_threads(), rt)
    return runner, tokenizer, spec_of(config)


def evaluate_folder(model_dir: str, data: str, *, task: str | None = None, text: str = "text",
                    text_pair: str | None = None, label: str = "label", max_length: int = 128, batch_size: int = 64,
                    threads: int | None = None, device: str = "auto", precision: str = "auto") -> dict[str, float]:
    """Metrics of a saved model on a labelled file (labels unseen in training are errors), on ``device`` in
    ``precision`` (as ``train.device`` and ``train.precision``; the defaults are fit's). ``model_dir`` is any
    folder ``open_model`` accepts. With ``task`` (causal_lm), any model with that head, a base model too
    (``load_as``)."""
    set_threads(threads)
    rt = resolve(device, precision)
    cfg = DataConfig(text=text, text_pair=text_pair, label=label, max_length=max_length)
    if task is not None:
        model, tokenizer, spec = load_as(model_dir, task)
        model.to(rt.device)
        enc = tasks.load_labelled(data, cfg, spec, tokenizer)
        with first_token_only(model):
            outputs = predict_outputs(model, enc, spec, batch_size, tokenizer.pad_token_id, rt)
    else:
        runner, tokenizer, spec = open_model(model_dir, threads, rt)
        enc = tasks.load_labelled(data, cfg, spec, tokenizer)
        outputs = _runner_outputs(runner, enc, spec, batch_size, tokenizer.pad_token_id or 0)
    return {**tasks.get(spec.task).metrics(outputs, enc, spec), "rows": enc.n_inputs}


def predict_file(model_dir: str, data: str, *, text: str = "text", text_pair: str | None = None,
                 max_length: int = 128, batch_size: int = 64, threads: int | None = None, device: str = "auto",
                 precision: str = "auto") -> list[dict]:
    """One dict per row, as the model's task writes it (classification: ``label`` and ``probabilities``;
    regression: ``score``; token classification: ``tokens``, ``tags`` and ``entities``), computed on
    ``device`` in ``precision``. ``model_dir`` is any folder ``open_model`` accepts."""
    set_threads(threads)
    rt = resolve(device, precision)
    runner, tokenizer, spec = open_model(model_dir, threads, rt)
    cfg = DataConfig(text=text, text_pair=text_pair, max_length=max_length)
    examples, enc = tasks.read_unlabelled(data, cfg, spec, tokenizer)
    outputs = _runner_outputs(runner, enc, spec, batch_size, tokenizer.pad_token_id or 0)
    return tasks.get(spec.task).rows(outputs, enc, spec, examples)
