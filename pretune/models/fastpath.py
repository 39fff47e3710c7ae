"""Skip work the classification head never reads: the last layer computes the first position only.

A sequence classifier of the BERT family (BERT, RoBERTa, XLM-R, ELECTRA) reads one vector, the last
layer's output at position 0. The last layer still computes all T positions: queries, attention output,
the feed-forward block. Only position 0's query needs computing; keys and values still come from every
position. That leaves about 2 of the layer's 12 per-token matmul units (H^2 each), so a 6-layer model
does about 14% fewer matmul FLOPs in its forward and backward pass. The result is the same computation
(``tests/models/test_fastpath.py`` compares logits and gradients with the unpatched model). The
weights are untouched, so the saved folder is a plain ``transformers`` model.

``first_token_only(model)`` patches the last layer for the duration of a ``with`` block, or does
nothing when the model is not one it knows to be safe.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from torch import nn

# Sequence classifiers whose head reads only position 0 of the last hidden state, and whose layers
# have BERT's anatomy (attention.self.{query,key,value}, attention.output, feed_forward_chunk).
SUPPORTED = {
    "BertForSequenceClassification": "BertEncoder",
    "RobertaForSequenceClassification": "RobertaEncoder",
    "XLMRobertaForSequenceClassification": "XLMRobertaEncoder",
    "ElectraForSequenceClassification": "ElectraEncoder",
}
ATTENTION = ("sdpa", "eager")  # flex attention takes a BlockMask, which a query of length 1 does not fit


def _last_layer(model: nn.Module) -> tuple[Optional[nn.Module], str]:
    """The last encoder layer of a supported classifier (bare or inside a peft wrapper), or None and why not."""
    head = next((m for m in model.modules() if type(m).__name__ in SUPPORTED), None)
    if head is None:
        kind = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        return None, f"model type {kind!r} is not a BERT-family sequence classifier"
    config = head.config
    if config.output_hidden_states or config.output_attentions or getattr(config, "is_decoder", False):
        return None, "every position of every layer is asked for"  # output_hidden_states, a decoder
    implementation = getattr(config, "_attn_implementation", None)
    if implementation not in ATTENTION:
        return None, f"attention {implementation!r} (it works with {' and '.join(ATTENTION)})"
    encoder = next((m for m in head.modules() if type(m).__name__ == SUPPORTED[type(head).__name__]), None)
    if encoder is None or not len(getattr(encoder, "layer", ())):
        return None, "no encoder layers found"
    layer = encoder.layer[-1]
    needed = ("attention", "feed_forward_chunk")
    if not all(hasattr(layer, n) for n in needed) or not hasattr(layer.attention, "self") \
            or not hasattr(sys.modules[type(layer.attention.self).__module__], "eager_attention_forward"):
        return None, f"this transformers version's {type(layer).__name__} has another anatomy"
    return layer, ""


def fast_path_status(model: nn.Module, enabled: bool = True) -> tuple[bool, str]:
    """Whether the first-token fast path will run, and a line saying so (or why not)."""
    if not enabled:
        return False, "first-token fast path off (train.first_token_only=false)"
    layer, reason = _last_layer(model)
    return (True, "first-token fast path on") if layer is not None else (False, f"first-token fast path off: {reason}")


def _forward_first_token(layer: nn.Module):
    """A forward for ``layer`` that returns the output of position 0 only, shape (B, 1, H)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    attn = layer.attention.self
    # the model's own eager attention (each modeling file defines one) is the default of the dispatch
    eager = getattr(sys.modules[type(attn).__module__], "eager_attention_forward")
    interface = ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation, eager)

    def forward(hidden_states: torch.Tensor, attention_mask: Optional[torch.Tensor] = None, *args, **kwargs):
        b, t, _ = hidden_states.shape
        d = attn.attention_head_size
        first = hidden_states[:, :1]
        query = attn.query(first).view(b, 1, -1, d).transpose(1, 2)
        key = attn.key(hidden_states).view(b, t, -1, d).transpose(1, 2)
        value = attn.value(hidden_states).view(b, t, -1, d).transpose(1, 2)
        mask = attention_mask
        if mask is not None and mask.dim() == 4 and mask.shape[-2] != 1:
            mask = mask[:, :, :1, :]  # the first query's row of a (B, 1, T, T) mask
        out, _ = interface(attn, query, key, value, mask, dropout=attn.dropout.p if attn.training else 0.0,
                           scaling=attn.scaling)
        out = out.reshape(b, 1, -1).contiguous()
        attention_output = layer.attention.output(out, first)
        return layer.feed_forward_chunk(attention_output)

    return forward


@contextmanager
def first_token_only(model: nn.Module, enabled: bool = True) -> Iterator[bool]:
    """Within the block, the last layer of a supported classifier computes position 0 only.

    Yields whether the patch is active. Outside the block the model is as it was.
    """
    layer = _last_layer(model)[0] if enabled else None
    if layer is None:
        yield False
        return
    had_own = "forward" in vars(layer)
    previous = vars(layer).get("forward")
    layer.forward = _forward_first_token(layer)
    try:
        yield True
    finally:
        if had_own:
            layer.forward = previous
        else:
            del layer.forward
