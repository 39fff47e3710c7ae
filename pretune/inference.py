"""Use a fine-tuned folder: metrics on a labelled file, predictions for any file."""

from __future__ import annotations

import numpy as np

from .data import TaskSpec, read_examples, tokenize
from .data.dataset import encode_labels
from .metrics import compute_metrics
from .models import load_finetuned
from .models.fastpath import first_token_only
from .train import predict_outputs
from .utils import set_threads


def evaluate_folder(model_dir: str, data: str, *, text: str = "text", text_pair: str | None = None,
                    label: str = "label", max_length: int = 128, batch_size: int = 64,
                    threads: int | None = None) -> dict[str, float]:
    """Metrics of a saved model on a labelled file (labels unseen in training are errors)."""
    set_threads(threads)
    model, tokenizer, spec = load_finetuned(model_dir)
    ex, table = read_examples(data, text, text_pair, label)
    gold = encode_labels(ex.labels, spec, table, label)
    enc = tokenize(ex.texts, ex.pairs, tokenizer, max_length, source=data, columns=(text, text_pair))
    with first_token_only(model):  # same outputs, less work (pretune.models.fastpath)
        outputs = predict_outputs(model, enc, batch_size, tokenizer.pad_token_id)
    return {**compute_metrics(spec.task, outputs, np.asarray(gold), spec.num_labels), "rows": len(gold)}


def predict_file(model_dir: str, data: str, *, text: str = "text", text_pair: str | None = None,
                 max_length: int = 128, batch_size: int = 64, threads: int | None = None) -> list[dict]:
    """One dict per row: ``label`` and ``probs`` (classification) or ``prediction`` (regression)."""
    set_threads(threads)
    model, tokenizer, spec = load_finetuned(model_dir)
    ex, _ = read_examples(data, text, text_pair, label=None)
    enc = tokenize(ex.texts, ex.pairs, tokenizer, max_length, source=data, columns=(text, text_pair))
    with first_token_only(model):
        outputs = predict_outputs(model, enc, batch_size, tokenizer.pad_token_id)
    return to_rows(outputs, spec)


def to_rows(outputs: np.ndarray, spec: TaskSpec) -> list[dict]:
    if spec.task == "regression":
        return [{"prediction": float(v)} for v in outputs.reshape(-1)]
    z = outputs - outputs.max(-1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(-1, keepdims=True)  # softmax, stable
    return [{"label": spec.labels[int(p.argmax())],
             "probs": {name: round(float(v), 6) for name, v in zip(spec.labels, p)}} for p in probs]
