"""Pruning: global magnitude (zeros) and structured (removes heads and FFN neurons for real).

Both finish with a short recovery fine-tune distilled from the source model.

Structured pruning scores each attention head and FFN neuron with the first-order Taylor
criterion (Molchanov et al., 2019): the summed |weight x gradient| of the parameters it owns,
gradients accumulated over a few training batches. It keeps the best ``1 - fraction`` per
layer and slices the Linear layers, so the model has fewer parameters and does less work.
transformers 5 dropped ``prune_heads``; BERT-style attention reshapes with ``-1`` heads, so
a sliced projection runs as is. The variant folder records every sliced shape so
``pretune.bench.load_runner`` can rebuild the model (format ``hf-pruned``).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from .formats import write_manifest
from ..data import collate, epoch_batches
from ..errors import PretuneError
from ..models import encoder_layers
from .. import tasks
from ..train import model_inputs
from .distill import distill_loss, train_with
from .registry import Context, register

# BERT-family module names inside one encoder layer.
Q, K, V = "attention.self.query", "attention.self.key", "attention.self.value"
ATT_OUT, FFN_IN, FFN_OUT = "attention.output.dense", "intermediate.dense", "output.dense"


def _recover(ctx: Context, model: nn.Module) -> dict:
    if ctx.cfg.recovery_steps <= 0:
        return {"recovery_steps": 0}
    losses: list[float] = []
    loss_fn = distill_loss(ctx.copy_model(), ctx.spec, ctx.cfg.temperature, ctx.cfg.alpha, record=losses)
    train_with(ctx, model, ctx.cfg.recovery_steps, loss_fn)
    return {"recovery_steps": len(losses), "recovery_loss_last": losses[-1] if losses else None}


def _encoder_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    prefix, _ = encoder_layers(model)
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.startswith(prefix + ".")]


@register("prune-magnitude", trains=True, logits=True, gives_model=True)
def prune_magnitude(ctx: Context, out: Path) -> dict:
    """Zero the ``sparsity`` fraction of smallest encoder Linear weights (global ranking), then recover.

    Zeros do not make dense kernels faster or files smaller; this variant shows the accuracy cost
    of a sparsity level (for sparse runtimes), not a speed-up.
    """
    from torch.nn.utils import prune

    model = ctx.copy_model()
    targets = [(m, "weight") for _, m in _encoder_linears(model)]
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=ctx.cfg.sparsity)
    facts = _recover(ctx, model)  # the masks stay applied while training, so zeros stay zero
    for m, name in targets:
        prune.remove(m, name)
    zeros = sum(int((m.weight == 0).sum()) for m, _ in targets)
    total = sum(m.weight.numel() for m, _ in targets)
    model.save_pretrained(str(out))
    ctx.save_tokenizer(out)
    write_manifest(out, format="hf", method="prune-magnitude", source=str(ctx.source))
    return {"sparsity": zeros / total, "target_sparsity": ctx.cfg.sparsity, **facts}


def check_bert_layout(model: nn.Module) -> None:
    """Raise a one-line ``PretuneError`` unless every layer has BERT's anatomy (what ``shrink_layer`` slices).

    DistilBERT, DeBERTa, ModernBERT and decoders name, fuse or share these projections differently
    (DeBERTa's relative attention reuses query/key on the position embeddings; Llama's grouped KV heads).
    """
    from ..models import model_type

    _, layers = encoder_layers(model)
    for layer in layers:
        names = dict(layer.named_modules())
        if not all(isinstance(names.get(n), nn.Linear) for n in (Q, K, V, ATT_OUT, FFN_IN, FFN_OUT)):
            raise PretuneError(f"prune-structured: model type {model_type(model)!r} has no BERT-style "
                               "attention.self.query/key/value and intermediate/output layers; use prune-magnitude "
                               "or distill")


def _taylor_scores(ctx: Context, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer: head scores (H,) and FFN neuron scores (F,)."""
    _, layers = encoder_layers(model)
    model.eval()  # no dropout: scores reflect the deployed model
    model.zero_grad(set_to_none=True)
    batches = epoch_batches(ctx.train.lengths, ctx.cfg.batch_size, ctx.cfg.seed, 0)[:ctx.cfg.importance_batches]
    for rows in batches:
        batch = collate(ctx.train, rows, ctx.pad_id)
        logits = model(**model_inputs(batch)).logits
        tasks.get(ctx.spec.task).loss(logits, batch["labels"]).backward()
    heads, neurons = [], []
    for layer in layers:
        mods = dict(layer.named_modules())
        n_heads = _num_heads(layer, model)
        # |w * g| summed over the input dimension: (out,) per projection
        qkv = sum((mods[n].weight * mods[n].weight.grad).abs().sum(1) for n in (Q, K, V))
        att_out = (mods[ATT_OUT].weight * mods[ATT_OUT].weight.grad).abs().sum(0)  # (all_head,)
        heads.append((qkv + att_out).view(n_heads, -1).sum(1))
        ffn_in = (mods[FFN_IN].weight * mods[FFN_IN].weight.grad).abs().sum(1)
        ffn_out = (mods[FFN_OUT].weight * mods[FFN_OUT].weight.grad).abs().sum(0)
        neurons.append(ffn_in + ffn_out)
    model.zero_grad(set_to_none=True)
    return heads, neurons


def _num_heads(layer: nn.Module, model: nn.Module) -> int:
    head_size = model.config.hidden_size // model.config.num_attention_heads
    return layer.get_submodule(Q).out_features // head_size


def _slice(linear: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    """A smaller Linear keeping output rows (dim 0) or input columns (dim 1) ``keep``."""
    w = linear.weight.data.index_select(dim, keep).clone()
    bias = linear.bias is not None
    new = nn.Linear(w.shape[1], w.shape[0], bias=bias)
    new.weight.data.copy_(w)
    if bias:
        new.bias.data.copy_(linear.bias.data if dim == 1 else linear.bias.data.index_select(0, keep))
    return new


def shrink_layer(layer: nn.Module, head_keep: torch.Tensor, head_size: int, neuron_keep: torch.Tensor) -> None:
    """Slice one BERT-style layer in place to the kept heads and FFN neurons."""
    rows = (head_keep[:, None] * head_size + torch.arange(head_size)).reshape(-1)  # kept q/k/v rows
    for name, keep, dim in ((Q, rows, 0), (K, rows, 0), (V, rows, 0), (ATT_OUT, rows, 1),
                            (FFN_IN, neuron_keep, 0), (FFN_OUT, neuron_keep, 1)):
        layer.set_submodule(name, _slice(layer.get_submodule(name), keep, dim))
    attn = layer.get_submodule("attention.self")
    if hasattr(attn, "num_attention_heads"):
        attn.num_attention_heads = len(head_keep)
        attn.all_head_size = len(head_keep) * head_size


def linear_shapes(model: nn.Module) -> dict[str, list[int]]:
    """``{qualified name: [out, in]}`` of every encoder Linear, for rebuilding a pruned model."""
    return {n: [m.out_features, m.in_features] for n, m in _encoder_linears(model)}


@register("prune-structured", trains=True, logits=True, gives_model=True)
def prune_structured(ctx: Context, out: Path) -> dict:
    """Remove ``head_fraction`` of the heads and ``ffn_fraction`` of the FFN neurons per layer, then recover."""
    cfg = ctx.cfg
    check_bert_layout(ctx.model)  # before any work: refused models cost nothing
    model = ctx.copy_model()
    _, layers = encoder_layers(model)
    before = sum(p.numel() for p in model.parameters())
    heads, neurons = _taylor_scores(ctx, model)
    head_size = model.config.hidden_size // model.config.num_attention_heads
    kept_heads = []
    for layer, h_score, n_score in zip(layers, heads, neurons):
        n_h = max(1, len(h_score) - math.floor(len(h_score) * cfg.head_fraction))
        n_n = max(1, len(n_score) - math.floor(len(n_score) * cfg.ffn_fraction))
        h_keep = torch.sort(torch.topk(h_score, n_h).indices).values  # keep the original order
        n_keep = torch.sort(torch.topk(n_score, n_n).indices).values
        shrink_layer(layer, h_keep, head_size, n_keep)
        kept_heads.append(h_keep.tolist())
    after = sum(p.numel() for p in model.parameters())
    facts = _recover(ctx, model)
    model.save_pretrained(str(out))
    ctx.save_tokenizer(out)
    write_manifest(out, format="hf-pruned", method="prune-structured", source=str(ctx.source),
                   shapes=linear_shapes(model))
    return {"parameters_before": before, "parameters_after": after, "kept_heads": kept_heads,
            "ffn_neurons_per_layer": len(n_keep), "head_fraction": cfg.head_fraction,
            "ffn_fraction": cfg.ffn_fraction, **facts}
