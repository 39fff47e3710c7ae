"""Instruction data and a tiny causal LM for the causal_lm tests: rows in every format, and a random 2-layer Llama
saved with its LM head (so that every load of it is the same model)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from conftest import FILLER, NEGATIVE, POSITIVE

# A chat template over words the tiny tokenizer knows, plus its unknown role names and </s> (special).
TEMPLATE = ("{% for m in messages %}{{ m['role'] }} {{ m['content'] }} </s> {% endfor %}"
            "{% if add_generation_prompt %}assistant {% endif %}")


def alpaca_rows(n: int, seed: int) -> list[dict]:
    """The response repeats the sentiment words of the instruction: a tiny model learns that quickly."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        cue = rng.choices(POSITIVE + NEGATIVE, k=2)
        words = cue + rng.choices(FILLER, k=rng.randint(1, 5))
        rng.shuffle(words)
        rows.append({"instruction": " ".join(words), "input": rng.choice(["", "the film"]), "output": " ".join(cue)})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_causal_lm(base: Path, folder: Path) -> Path:
    """``base`` (a tiny family model without a head) saved as a causal LM with a seeded random head."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    AutoModelForCausalLM.from_pretrained(str(base)).save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(folder))
    return folder


def resumed_equals_uninterrupted(fresh, run_dir: Path, kill_at: int) -> int:
    """Train ``fresh()`` (cfg, tokenizer, data, model) through once; again, killed after step ``kill_at``'s
    evaluation; then resumed from its checkpoint. Asserts the resumed weights equal the uninterrupted ones and
    returns the resumed run's last step."""
    import pytest
    import torch

    from pretune.train import train

    def run(**kwargs):
        cfg, tok, data, model = fresh()
        return model, train(model, data.train, data.eval, data.spec, cfg.train, pad_id=tok.pad_token_id, **kwargs)

    model, _ = run()
    expected = {n: p.detach().clone() for n, p in model.named_parameters()}

    class Kill(Exception):
        pass

    def kill(step, metrics):
        if step == kill_at:
            raise Kill

    with pytest.raises(Kill):
        run(run_dir=run_dir, callback=kill)
    model, result = run(run_dir=run_dir, resume=True)
    for name, value in model.named_parameters():
        assert torch.equal(value, expected[name]), name
    return result.step
