"""dpo reading, encoding and loss: prompt/chosen/rejected and HH-RLHF rows, the bad rows, and the loss against
trl's formulas on fixed log-probs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from dpo import hh_rows, pair_rows
from sft import write_jsonl
from torch.nn import functional as F

from pretune.config import DataConfig
from pretune.data import IGNORE, read_table
from pretune.errors import DataError
from pretune.metrics import higher_is_better
from pretune.search.factories import parse_objectives
from pretune.tasks import dpo


def _read(tmp_path, rows, name="d.jsonl"):
    return dpo.read(read_table(str(write_jsonl(tmp_path / name, rows))), DataConfig())


def test_hh_dialogues_split_at_the_last_assistant_turn(tmp_path):
    rows = [{"chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: and?\n\nAssistant: fine",
             "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: and?\n\nAssistant: go away"},
            {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: OTHER\n\nAssistant: c"}]
    pairs = _read(tmp_path, rows)
    assert pairs.rows == [("\n\nHuman: hi\n\nAssistant: hello\n\nHuman: and?\n\nAssistant:", " fine", " go away")]
    assert len(pairs.labels) == 1  # the pair whose dialogues differ before the last turn is left out (logged)


def test_the_real_hh_file_reads_as_the_readme_counts():
    path = "/work/shared/data/preferences/hh_rlhf_harmless_base_test/test.jsonl.gz"
    pairs = dpo.read(read_table(path), DataConfig())
    assert len(pairs.rows) == 2303  # 2,312 less 5 whose dialogues differ early and 4 with an empty last reply


@pytest.mark.parametrize("row, message", [
    ({"prompt": "p", "chosen": "good", "rejected": "good"}, "chosen and rejected are the same response"),
    ({"prompt": "p", "chosen": " ", "rejected": "bad"}, "column 'chosen': empty response"),
    ({"chosen": "\n\nHuman: hi", "rejected": "\n\nHuman: hi\n\nAssistant: no"}, "has no assistant turn"),
    ({"prompt": "p", "chosen": None, "rejected": "bad"}, "column 'chosen': expected text"),
])
def test_bad_rows_are_one_line_errors_naming_the_row(tmp_path, row, message):
    with pytest.raises(DataError) as e:
        first = {"prompt": "p", "chosen": "good", "rejected": "bad"}
        _read(tmp_path, [first if "prompt" in row else hh_rows([first])[0], row])
    assert message in str(e.value) and "line 2" in str(e.value) and "\n" not in str(e.value)


def test_a_pair_encodes_as_chosen_then_rejected_with_response_labels(tiny_llama_tokenizer, tmp_path):
    pairs = _read(tmp_path, pair_rows(6, 0))
    enc = dpo.encode(pairs, tiny_llama_tokenizer, DataConfig(max_length=32), None)
    assert len(enc) == 6 and enc.split is not None
    batch = dpo.collate(enc, [0, 3], pad_id=0)
    assert batch["input_ids"].shape[0] == 4  # chosen 0, chosen 3, rejected 0, rejected 3
    for k, (i, part) in enumerate([(0, 0), (3, 0), (0, 1), (3, 1)]):
        p, c, r = pairs.rows[i]
        scored = batch["labels"][k][batch["labels"][k] != IGNORE].tolist()
        assert tiny_llama_tokenizer.decode(scored, skip_special_tokens=True).strip() == (c, r)[part]
    sub = enc.select([3, 0])
    assert np.array_equal(sub.split, enc.split[[3, 0]])


@pytest.fixture
def tiny_llama_tokenizer(family_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(family_dir("llama")))


def _trl_sigmoid(pc, pr, rc, rr, beta):  # trl 1.16 DPOTrainer._compute_loss, loss_type sigmoid
    delta_score = (pc - rc) - (pr - rr)
    return -F.logsigmoid(beta * delta_score)


def _trl_ipo(pc, pr, rc, rr, beta, nc, nr):  # trl 1.16, loss_type ipo (log-ratios averaged per token)
    ipo_delta = (pc - rc) / nc.clamp(min=1.0) - (pr - rr) / nr.clamp(min=1.0)
    return (ipo_delta - 1 / (2 * beta)) ** 2


def _trl_conservative(pc, pr, rc, rr, beta, ls):  # trl's sigmoid with label smoothing (cDPO; 1.16: "aot" form)
    delta = (pc - rc) - (pr - rr)
    return -F.logsigmoid(beta * delta) * (1 - ls) - F.logsigmoid(-beta * delta) * ls


def test_the_loss_equals_trls_formulas_on_fixed_log_probs():
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (-20 * torch.rand(16, generator=g) for _ in range(4))
    nc, nr = torch.randint(1, 9, (16,), generator=g).float(), torch.randint(1, 9, (16,), generator=g).float()
    for beta in (0.1, 0.5):
        s = {"loss_type": "sigmoid", "beta": beta, "label_smoothing": 0.0}
        assert torch.allclose(dpo.pair_loss(pc, pr, rc, rr, s), _trl_sigmoid(pc, pr, rc, rr, beta))
        s = {**s, "label_smoothing": 0.2}
        assert torch.allclose(dpo.pair_loss(pc, pr, rc, rr, s), _trl_conservative(pc, pr, rc, rr, beta, 0.2))
        s = {"loss_type": "ipo", "beta": beta, "label_smoothing": 0.0}
        assert torch.allclose(dpo.pair_loss(pc, pr, rc, rr, s, nc, nr), _trl_ipo(pc, pr, rc, rr, beta, nc, nr))
    same = dpo.pair_loss(pc, pr, pc, pr, {"loss_type": "sigmoid", "beta": 0.1, "label_smoothing": 0.0})
    assert torch.allclose(same, torch.full_like(same, math.log(2)))  # policy = reference: log 2


def test_metrics_read_the_rewards_and_are_maximised():
    out = np.array([[0.5, -3, -5, -4, -4, 0.1, -0.1], [0.9, -6, -2, -4, -4, -0.2, 0.2],
                    [0.1, -1, -9, -4, -4, 0.3, -0.5]])
    m = dpo.metrics(out, None, None)
    assert m["reward_accuracy"] == pytest.approx(2 / 3) and m["reward_margin"] == pytest.approx((0.2 - 0.4 + 0.8) / 3)
    assert m["chosen_logps"] == pytest.approx(-10 / 3) and m["loss"] == pytest.approx(0.5)
    assert higher_is_better("reward_accuracy") and higher_is_better("reward_margin") and not higher_is_better("loss")
    assert parse_objectives(["reward_accuracy", "reward_margin", "eval_loss"], "reward_accuracy") == [
        ("reward_accuracy", "maximize"), ("reward_margin", "maximize"), ("eval_loss", "minimize")]
