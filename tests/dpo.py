"""Preference pairs for the dpo tests: the chosen response is a positive word, the rejected one a negative word,
after a prompt of filler words (a tiny model learns to prefer the positive words quickly)."""

from __future__ import annotations

import random


def pair_rows(n: int, seed: int) -> list[dict]:
    from conftest import FILLER, NEGATIVE, POSITIVE

    rng = random.Random(seed)
    return [{"prompt": " ".join(rng.choices(FILLER, k=rng.randint(2, 5))), "chosen": rng.choice(POSITIVE),
             "rejected": rng.choice(NEGATIVE)} for _ in range(n)]


def hh_rows(pairs: list[dict]) -> list[dict]:
    """The same pairs as HH-RLHF whole dialogues."""
    def dialogue(p, r):
        return f"\n\nHuman: {p}\n\nAssistant: {r}"
    return [{"chosen": dialogue(r["prompt"], r["chosen"]), "rejected": dialogue(r["prompt"], r["rejected"])}
            for r in pairs]
