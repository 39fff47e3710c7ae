"""Tagged sentences a tiny model learns: sentiment words are entities of their polarity, "very" opens a two-word
one, the other words are O (IOB2). Shared by the token classification tests of every stage."""

from __future__ import annotations

import json
import random
from pathlib import Path

from conftest import FILLER, NEGATIVE, POSITIVE


def sentences(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """``n`` seeded (tokens, tags) pairs over the tiny BERT's vocabulary."""
    rng, out = random.Random(seed), []
    for _ in range(n):
        tokens, tags = [], []
        for _ in range(rng.randint(2, 7)):
            kind = rng.choice(["POS", "NEG", None, None])
            if kind is None:
                tokens.append(rng.choice(FILLER[:-3]))  # not "very", "quite", "story"
                tags.append("O")
                continue
            extra = ["very"] if rng.random() < 0.3 else []
            tokens += extra + [rng.choice(POSITIVE if kind == "POS" else NEGATIVE)]
            tags += [f"B-{kind}"] + [f"I-{kind}"] * len(extra)
        out.append((tokens, tags))
    return out


def write_jsonl(path: Path, n: int, seed: int, text: bool = False) -> Path:
    """Rows of ``tokens`` and ``ner_tags``; with ``text``, a ``text`` column only (the tokens joined)."""
    rows = [{"text": " ".join(t)} if text else {"tokens": t, "ner_tags": g} for t, g in sentences(n, seed)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_conll(path: Path, n: int, seed: int) -> Path:
    """The same sentences as ``write_jsonl`` in CoNLL columns (token, tag)."""
    path.write_text("\n\n".join("\n".join(f"{w} {t}" for w, t in zip(*s)) for s in sentences(n, seed)) + "\n")
    return path
