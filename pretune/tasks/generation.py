"""Generation speed of a causal language model at batch 1: the bench measurement of the tasks whose models write
text (``Task.measure``).

For each of the first ``cfg.prompts`` eval rows, the prompt (the tokens before the first scored one) is run once
through the model (prefill, timed up to the first generated token: time to first token), then one token at a time
from the KV cache (decode), greedy, for ``cfg.max_new_tokens`` tokens. Decoding goes on past an end-of-sequence
token (benchmarks' ``ignore_eos``), so that every prompt times the same number of steps; the tokens kept stop at
it, as ``model.generate(do_sample=False)`` does, and are the same. The loop is written out so that prefill and
decode are timed apart.
"""

from __future__ import annotations

import time

import numpy as np

from ..data import IGNORE, Encoded
from ..errors import ModelError


def prompts(enc: Encoded, n: int) -> list[np.ndarray]:
    """The token ids before the first scored token of each of the first ``n`` rows (the whole row, less its last
    token, when it is scored from the start)."""
    out = []
    for i in range(min(n, len(enc))):
        a, b = enc.offsets[i], enc.offsets[i + 1]
        scored = np.flatnonzero(enc.labels[a:b] != IGNORE) if enc.labels is not None else np.zeros(0, np.int64)
        cut = int(scored[0]) if len(scored) and scored[0] > 1 else max(b - a - 1, 1)
        out.append(np.asarray(enc.ids[a:a + cut], dtype=np.int64))
    return out


def _eos_ids(model) -> set[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = getattr(model.config, "eos_token_id", None)
    return set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])


def greedy(model, ids, max_new_tokens: int, device=None) -> tuple[list[int], float, float]:
    """Greedy continuation of ``ids`` (1-D ints) by ``max_new_tokens`` tokens, end-of-sequence or not: (new token
    ids, seconds to the first one, seconds of the rest).

    ``int()`` of each token waits for the device, so the timings are whole.
    """
    import torch

    x = torch.as_tensor(ids, dtype=torch.long, device=device).unsqueeze(0)  # (1, T)
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = model(input_ids=x, use_cache=True, logits_to_keep=1)  # prefill: (1, 1, V)
        token = int(out.logits[0, -1].argmax())
        first = time.perf_counter() - t0
        tokens, cache = [token], out.cache
        t1 = time.perf_counter()
        while len(tokens) < max_new_tokens:
            step = torch.tensor([[token]], dtype=torch.long, device=device)
            out = model(input_ids=step, cache=cache, use_cache=True)  # decode: one token, (1, 1, V)
            token, cache = int(out.logits[0, -1].argmax()), out.cache
            tokens.append(token)
        rest = time.perf_counter() - t1
    return tokens, first, rest


def generation_speed(runner, enc: Encoded, cfg) -> dict:
    """Prefill tokens/s, decode tokens/s and time to first token (ms) at batch 1 over the first ``cfg.prompts``
    eval prompts, after one untimed warm-up; ``ids``: the tokens generated for each prompt, up to and with the
    first end-of-sequence token (what greedy ``generate`` gives).

    Raises:
        ModelError: the runner is not a PyTorch model (an ONNX graph has no generation loop here).
    """
    model = getattr(runner, "model", None)
    if model is None:
        raise ModelError(f"generation speed needs a PyTorch model, not a {runner.backend} one; bench the PyTorch "
                         "folder")
    device = runner.runtime.device
    model.eval()
    rows = prompts(enc, cfg.prompts)
    greedy(model, rows[0], min(cfg.max_new_tokens, 4), device)  # warm-up: the first call allocates
    eos = _eos_ids(model)
    ids, firsts, rests = [], [], []
    for p in rows:
        tokens, first, rest = greedy(model, p, cfg.max_new_tokens, device)
        firsts.append(first), rests.append(rest)
        end = next((i + 1 for i, t in enumerate(tokens) if t in eos), len(tokens))
        ids.append(tokens[:end])
    decoded = len(rows) * (cfg.max_new_tokens - 1)  # tokens after the first, each one decode step
    return {"batch_size": 1, "prompts": len(rows), "max_new_tokens": cfg.max_new_tokens,
            "prompt_tokens": int(sum(len(p) for p in rows)), "generated_tokens": len(rows) * cfg.max_new_tokens,
            "prompt_tokens_per_s": sum(len(p) for p in rows) / max(sum(firsts), 1e-9),
            "generated_tokens_per_s": decoded / sum(rests) if decoded and sum(rests) > 0 else None,
            "ttft_ms": {"p50": float(np.median(firsts) * 1000), "mean": float(np.mean(firsts) * 1000)},
            "ids": ids}
