import numpy as np
from conftest import make_rows, write_csv

from pretune.config import DataConfig
from pretune.data import epoch_batches, padding_fraction, tokenize
from pretune.tasks import load_task_data
from pretune.data.dataset import stratified_split


def test_stratified_split_is_seeded_and_keeps_class_balance():
    labels = [0] * 80 + [1] * 20
    tr, va = stratified_split(labels, 0.2, seed=3, stratify=True)
    assert sorted(tr + va) == list(range(100))
    assert sum(labels[i] for i in va) == 4 and len(va) == 20  # 20% of each class
    assert stratified_split(labels, 0.2, seed=3, stratify=True) == (tr, va)
    assert stratified_split(labels, 0.2, seed=4, stratify=True) != (tr, va)


def test_epoch_batches_cover_every_row_once_and_replay_exactly():
    lengths = np.random.default_rng(0).integers(3, 60, size=1000)
    for grouped in (True, False):
        batches = epoch_batches(lengths, 32, seed=1, epoch=2, group_by_length=grouped)
        rows = np.concatenate(batches)
        assert sorted(rows.tolist()) == list(range(1000))
        again = epoch_batches(lengths, 32, seed=1, epoch=2, group_by_length=grouped)
        assert all((a == b).all() for a, b in zip(batches, again))
    other = epoch_batches(lengths, 32, seed=1, epoch=3)
    assert any((a != b).any() for a, b in zip(batches, other) if len(a) == len(b))


def test_length_grouping_cuts_padding():
    lengths = np.random.default_rng(0).integers(3, 60, size=5000)
    grouped = padding_fraction(lengths, epoch_batches(lengths, 32, 0, 0, True))
    random_ = padding_fraction(lengths, epoch_batches(lengths, 32, 0, 0, False))
    assert grouped < 0.05 < 0.3 < random_


def test_tokenization_is_cached_on_disk(tmp_path, tiny_bert):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    path = write_csv(tmp_path / "d.csv", make_rows(50))
    cfg = DataConfig(train=str(path), cache_dir=str(tmp_path / "cache"))
    first = load_task_data(cfg, tok)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1

    class Exploding:  # a cache hit must not tokenize again
        def __getattr__(self, name):
            return getattr(tok, name)

        def __call__(self, *a, **k):
            raise AssertionError("tokenized twice")

    second = load_task_data(cfg, Exploding())
    assert (first.train.ids == second.train.ids).all() and (first.eval.labels == second.eval.labels).all()


def test_pairs_get_segment_ids(tmp_path, tiny_bert):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    enc = tokenize(["good film"], ["bad plot"], tok, 32)
    assert enc.type_ids is not None and enc.type_ids.tolist() == [0, 0, 0, 0, 1, 1, 1]


def test_max_train_samples_subsamples(tmp_path, tiny_bert):
    from transformers import AutoTokenizer

    path = write_csv(tmp_path / "d.csv", make_rows(200))
    data = load_task_data(DataConfig(train=str(path), max_train_samples=50), AutoTokenizer.from_pretrained(tiny_bert))
    assert len(data.train) == 50 and len(data.eval) == 20
