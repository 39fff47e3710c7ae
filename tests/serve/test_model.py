"""The served model on its own: counting tokens in the requests' threads (and the event loop's) while the model's
thread predicts."""

from __future__ import annotations

import threading
import time

import pytest

from pretune import tasks
from pretune.errors import DataError
from pretune.serve import ServeConfig
from pretune.serve.model import ServedModel, inspect


def test_counting_tokens_beside_the_model_never_lets_an_untruncated_text_through(classifier):
    """A fast tokenizer keeps its truncation setting in shared state: counting (untruncated) in other threads
    while the model's thread encodes (truncated to 16) once fed the model 92 positions of a 64-position model."""
    model = ServedModel(inspect(str(classifier), 16), ServeConfig(path=str(classifier), threads=1, max_length=16))
    long = " ".join(["good", "bad", "film"] * 30)
    tokens = model.count_tokens(*model._examples([long], None), 1)[0]
    assert tokens == 92
    failures: list = []
    stop = threading.Event()

    def repeat(fn):
        while not stop.is_set():
            try:
                fn()
            except Exception as e:  # collected and reported below
                failures.append(repr(e))
                stop.set()

    def count(on_loop: bool = False):
        if model.count_tokens(*model._examples([long] * 4, None), 4, on_loop=on_loop) != [tokens] * 4:
            raise AssertionError("a count came out truncated")

    threads = [threading.Thread(target=repeat, args=(lambda: model.predict([(long, None)] * 8),))]
    threads += [threading.Thread(target=repeat, args=(count,)) for _ in range(3)]
    threads += [threading.Thread(target=repeat, args=(lambda: count(on_loop=True),))]  # the event loop's thread
    for t in threads:
        t.start()
    time.sleep(4)
    stop.set()
    for t in threads:
        t.join()
    assert not failures, failures[:2]


def test_texts_are_sized_by_characters_unless_long_ones_are_refused(classifier):
    """The batcher only orders texts by size, and characters order them as tokens do; counting tokens is paid for
    only when a text over the limit must be refused."""
    texts, pairs = ["good film", "a bad and dull film"], ["fine", "awful"]
    truncating = ServedModel(inspect(str(classifier), 16), ServeConfig(path=str(classifier), threads=1,
                                                                      max_length=16))
    assert truncating.prepare(texts, None) == [9, 19]
    assert truncating.prepare(texts, pairs, on_loop=True) == [13, 24]
    refusing = ServedModel(inspect(str(classifier), 16), ServeConfig(path=str(classifier), threads=1,
                                                                     max_length=16, on_long="refuse"))
    assert refusing.prepare(texts, None) == [4, 7]  # [CLS] and [SEP] around the words
    with pytest.raises(DataError, match="text 1: 92 tokens, over the limit of 16"):
        refusing.prepare(["good", " ".join(["good", "bad", "film"] * 30)], None, on_loop=True)


def test_the_direct_tokenizer_path_gives_the_task_s_own_batches_and_rows(classifier):
    """Sentence tasks skip the tokenizer's Python wrapper and torch in the model's thread: the same ids, masks and
    type ids as the task's encode and collate, truncation of texts and pairs included, and so the same rows."""
    model = ServedModel(inspect(str(classifier), 16), ServeConfig(path=str(classifier), threads=1, max_length=16))
    assert model.direct is not None
    words = ["good", "bad", "film", "plot", "a", "the", "not", "very"]
    texts = [" ".join(words[(i * 3 + j) % 8] for j in range(i % 25 + 1)) for i in range(40)]  # 1 to 25 words
    pairs = [" ".join(words[(i + j) % 8] for j in range((7 * i) % 30 + 1)) for i in range(40)]
    for batch_texts, batch_pairs in ((texts, None), (texts, pairs), (texts[:1], None), (texts[24:25], pairs[5:6])):
        want = model._task_batch(batch_texts, batch_pairs)[0]
        got = model.direct(batch_texts, batch_pairs)
        assert set(got) == set(want) == {"input_ids", "attention_mask", "token_type_ids"}
        for key in want:
            assert got[key].dtype == want[key].dtype and (got[key] == want[key]).all(), key
        if len(batch_texts) > 1:
            assert want["input_ids"].shape[1] == 16  # the longest were truncated
    direct_rows = model.predict([(t, p) for t, p in zip(texts, pairs)])
    model.direct = None
    assert model.predict([(t, p) for t, p in zip(texts, pairs)]) == direct_rows


def test_a_tokenizer_whose_wrapper_differs_from_its_backend_keeps_the_task_s_path(classifier):
    model = ServedModel(inspect(str(classifier), 16), ServeConfig(path=str(classifier), threads=1, max_length=16))
    from pretune.serve.model import SequenceEncoder

    def lowered(texts, pairs):  # a wrapper that would change the ids (as Python-side processing does)
        batch = model._task_batch(texts, pairs)[0]
        batch["input_ids"][:, 1] += 1
        return batch

    assert SequenceEncoder.make(model.task, model.tokenizer, 16, model.pad_id, lowered) is None
    same = lambda t, p: model._task_batch(t, p)[0]  # noqa: E731
    assert SequenceEncoder.make(model.task, model.tokenizer, 16, model.pad_id, same) is not None
    for name in ("token_classification", "causal_lm", "dpo"):  # tokens' outputs: the task's own path
        assert SequenceEncoder.make(tasks.get(name), model.tokenizer, 16, model.pad_id, same) is None
