"""Token classification: reading words and tags, aligning tags to sub-tokens, windows, schemes and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pretune import tasks
from pretune.config import DataConfig
from pretune.data import IGNORE, read_table
from pretune.errors import ConfigError, DataError, ModelError
from pretune.tasks import load_labelled, load_task_data, tags
from pretune.tasks.tokens import align, continuation
from pretune.tasks.words import encode_words, read_words, windows

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "new", "york", "##er", "##s", "is", "big", "paris", "in",
         "john", "lives", "the", "city", ".", "wash", "##ing", "##ton"]


@pytest.fixture(scope="module")
def wordpiece(tmp_path_factory):
    """A WordPiece tokenizer that splits some words: yorkers -> york ##er ##s, washington -> wash ##ing ##ton."""
    from transformers import BertTokenizer

    folder = tmp_path_factory.mktemp("tok")
    BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)}).save_pretrained(str(folder))
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(folder))


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ROWS = [{"tokens": ["john", "lives", "in", "washington", "."], "ner_tags": ["B-PER", "O", "O", "B-LOC", "O"]},
        {"tokens": ["new", "yorkers", "is", "big"], "ner_tags": ["B-MISC", "I-MISC", "O", "O"]}]


def test_first_subtoken_takes_the_tag_and_the_rest_are_ignored(tmp_path, wordpiece):
    path = _jsonl(tmp_path / "d.jsonl", ROWS)
    data = load_task_data(DataConfig(train=str(path), eval=str(path)), wordpiece)
    spec, enc = data.spec, data.train
    assert spec.task == "token_classification"  # inferred: the label column holds lists
    assert spec.labels == ["O", "B-LOC", "B-MISC", "I-MISC", "B-PER"] and spec.settings == {"scheme": "IOB2"}
    name = {i: n for i, n in enumerate(spec.labels)}
    row = enc.labels[enc.offsets[0]:enc.offsets[1]]
    pieces = wordpiece.convert_ids_to_tokens(enc.ids[enc.offsets[0]:enc.offsets[1]].tolist())
    assert pieces == ["[CLS]", "john", "lives", "in", "wash", "##ing", "##ton", ".", "[SEP]"]
    assert [name.get(int(t), "-") for t in row] == ["-", "B-PER", "O", "O", "B-LOC", "-", "-", "O", "-"]
    assert IGNORE in row and enc.scored[enc.offsets[0]:enc.offsets[1]].sum() == 5  # one scored token per word


def test_every_subtoken_setting_labels_continuations_as_inside(tmp_path, wordpiece):
    path = _jsonl(tmp_path / "d.jsonl", ROWS)
    data = load_task_data(DataConfig(train=str(path), eval=str(path), label_all_subtokens=True), wordpiece)
    spec, enc = data.spec, data.train
    name = {i: n for i, n in enumerate(spec.labels)}
    second = [name.get(int(t), "-") for t in enc.labels[enc.offsets[1]:enc.offsets[2]]]
    # [CLS] new york ##er ##s is big [SEP]: B-MISC's later sub-tokens learn I-MISC
    assert second == ["-", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O", "O", "-"]
    assert continuation(spec).tolist() == [0, 1, 3, 3, 4]  # B-LOC has no I-LOC: it stays B-LOC


def test_a_sentence_three_times_max_length_gets_one_prediction_per_word(tmp_path, wordpiece):
    words = (["john", "lives", "in", "washington", "."] * 12)[:48]  # 48 words, 56 sub-tokens
    rows = [{"tokens": words, "ner_tags": ["O"] * len(words)}]
    table = read_table(_jsonl(tmp_path / "long.jsonl", rows))
    enc = encode_words(read_words(table, "tokens", "ner_tags"), wordpiece, max_length=16, stride=4)
    assert len(enc) >= 4 and enc.lengths.max() <= 16 and set(enc.inputs.tolist()) == {0}
    scored_words = enc.words[enc.scored]
    assert sorted(scored_words.tolist()) == list(range(48))  # every word exactly once
    for r in range(len(enc)):  # each window: [CLS] ... [SEP], cut between words
        ids = enc.ids[enc.offsets[r]:enc.offsets[r + 1]]
        assert ids[0] == wordpiece.cls_token_id and ids[-1] == wordpiece.sep_token_id
        w = enc.words[enc.offsets[r] + 1:enc.offsets[r + 1] - 1]
        assert w[0] != (enc.words[enc.offsets[r - 1] + enc.lengths[r - 1] - 2] if r else -1)
    # consecutive windows overlap, and a word is predicted where it has context on both sides
    assert len(enc.ids) - 2 * len(enc) > 56


def test_windows_overlap_by_the_stride_and_cut_between_words():
    words = np.repeat(np.arange(10), 2)  # 10 words of 2 sub-tokens
    cuts = windows(words, budget=6, stride=2)
    assert cuts[0] == (0, 6) and cuts[-1][1] == 20
    assert all(a % 2 == 0 and b % 2 == 0 for a, b in cuts)  # never inside a word
    assert all(a2 < b1 for (_, b1), (a2, _) in zip(cuts, cuts[1:]))  # overlapping


@pytest.mark.parametrize("scheme,gold,pred", [
    ("IOB1", [["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "O"], ["I-ORG", "O"]],
     [["I-PER", "O", "O", "I-LOC", "I-LOC", "O"], ["I-ORG", "O"]]),
    ("IOB2", [["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "O"], ["I-ORG", "O"]],
     [["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"], ["B-ORG", "O"]]),
    ("BIOES", [["B-PER", "E-PER", "O", "S-LOC", "S-LOC", "O"], ["S-ORG", "O"]],
     [["B-PER", "E-PER", "O", "B-LOC", "E-LOC", "O"], ["S-ORG", "O"]]),
])
def test_spans_and_scores_match_seqeval(scheme, gold, pred):
    from seqeval.metrics import f1_score, precision_score, recall_score
    from seqeval.metrics.sequence_labeling import get_entities
    from seqeval.scheme import IOB1, IOB2, IOBES

    assert tags.detect_scheme(gold) == scheme
    for seq in gold + pred:
        assert [(k, a, b - 1) for k, a, b in tags.spans(seq, scheme)] == get_entities(seq)
    got = tags.scores(gold, pred, scheme)
    assert got["f1"] == pytest.approx(f1_score(gold, pred))
    assert got["precision"] == pytest.approx(precision_score(gold, pred))
    assert got["recall"] == pytest.approx(recall_score(gold, pred))
    cls = {"IOB1": IOB1, "IOB2": IOB2, "BIOES": IOBES}[scheme]
    assert got["strict_f1"] == pytest.approx(f1_score(gold, pred, mode="strict", scheme=cls))
    per_type = f1_score(gold, pred, average=None)
    assert [got[f"f1_{k}"] for k in sorted({e[0] for s in gold + pred for e in tags.spans(s, scheme)})] \
        == pytest.approx(list(per_type))


def test_iob1_and_iob2_spans_of_conll_sentences():
    # CoNLL-2003's IOB1: B- only between two entities of one type; the same entities written in IOB2
    iob1 = ["I-ORG", "O", "I-MISC", "O", "O", "I-PER", "I-PER", "B-PER", "O"]
    iob2 = ["B-ORG", "O", "B-MISC", "O", "O", "B-PER", "I-PER", "B-PER", "O"]
    expected = [("ORG", 0, 1), ("MISC", 2, 3), ("PER", 5, 7), ("PER", 7, 8)]
    assert tags.spans(iob1, "IOB1") == tags.spans(iob2, "IOB2") == expected
    assert tags.scores([iob1], [iob2], "IOB2")["strict_f1"] == 1.0  # each side read by its own scheme


def test_conll_file_reads_sentences_and_the_tag_column(tmp_path, wordpiece):
    conll = tmp_path / "d.conll"
    conll.write_text("-DOCSTART- -X- O O\n\njohn NNP B-NP I-PER\nlives VBZ B-VP O\n\n  \n"
                     "paris NNP B-NP I-LOC\n. . O O\n")
    table = read_table(conll)
    assert table.columns["tokens"] == [["john", "lives"], ["paris", "."]]
    assert table.columns["tags"] == [["I-PER", "O"], ["I-LOC", "O"]] and table.lines == [3, 7]
    data = load_task_data(DataConfig(train=str(conll), eval=str(conll)), wordpiece)
    assert data.spec.settings["scheme"] == "IOB1" and data.spec.labels == ["O", "I-LOC", "I-PER"]
    pos = load_task_data(DataConfig(train=str(conll), eval=str(conll), label="1", task="token_classification"),
                         wordpiece)
    assert pos.spec.labels == [".", "NNP", "VBZ"] and pos.spec.settings["scheme"] is None


def test_integer_tags_take_their_names_from_the_config(tmp_path, wordpiece):
    path = _jsonl(tmp_path / "d.jsonl", [{"tokens": ["john", "lives"], "tags": [1, 0]}])
    names = ["O", "B-PER", "I-PER"]
    data = load_task_data(DataConfig(train=str(path), eval=str(path), label_names=names), wordpiece)
    assert data.spec.labels == names
    with pytest.raises(DataError, match=r"d.jsonl, line 1, item 1, column 'tags': integer tag 1 has no name; set "
                                        r"data.label_names"):
        load_task_data(DataConfig(train=str(path), eval=str(path)), wordpiece)


# ----------------------------------------------------------------------------- bad input, one line each


def test_tokens_and_tags_of_different_lengths(tmp_path, wordpiece):
    path = _jsonl(tmp_path / "d.jsonl", ROWS + [{"tokens": ["john", "lives"], "ner_tags": ["B-PER"]}])
    with pytest.raises(DataError, match=r"d.jsonl, line 3: 2 tokens in column 'tokens' but 1 tags in column "
                                        r"'ner_tags'; every token needs one tag"):
        load_task_data(DataConfig(train=str(path)), wordpiece)


def test_empty_token(tmp_path, wordpiece):
    path = _jsonl(tmp_path / "d.jsonl", ROWS + [{"tokens": ["john", " "], "ner_tags": ["B-PER", "O"]}])
    with pytest.raises(DataError, match=r"d.jsonl, line 3, item 2, column 'tokens': token 2 is empty; remove it"):
        load_task_data(DataConfig(train=str(path)), wordpiece)


def test_tag_the_training_data_never_had(tmp_path, wordpiece):
    train = _jsonl(tmp_path / "train.jsonl", ROWS)
    dev = tmp_path / "dev.conll"
    dev.write_text("john B-PER\nlives O\n\nparis B-GPE\n")
    with pytest.raises(DataError, match=r"dev.conll, line 4, column 'tags': tag 'B-GPE' does not occur in the "
                                        r"training data \(known: O, B-LOC, B-MISC, I-MISC, B-PER\)"):
        load_task_data(DataConfig(train=str(train), eval=str(dev)), wordpiece)


def test_strict_tags_refuse_an_inside_tag_its_scheme_does_not_allow(tmp_path, wordpiece):
    rows = ROWS + [{"tokens": ["the", "new", "city"], "ner_tags": ["O", "I-MISC", "O"]}]
    path = _jsonl(tmp_path / "d.jsonl", rows)
    data = load_task_data(DataConfig(train=str(path)), wordpiece)  # read as it is by default
    assert data.spec.settings["scheme"] == "IOB2"
    with pytest.raises(DataError, match=r"d.jsonl, line 3, item 2, column 'ner_tags': tag 'I-MISC' after 'O': IOB2 "
                                        r"continues an entity with I-MISC only after B-MISC or I-MISC; fix the tag"):
        load_task_data(DataConfig(train=str(path), strict_tags=True), wordpiece)
    conll = tmp_path / "d.conll"
    conll.write_text("john B-PER\nlives O\n\nparis I-LOC\n")  # the line of the tag itself
    with pytest.raises(DataError, match=r"d.conll, line 4, column 'tags': tag 'I-LOC' after 'the sentence start'"):
        load_task_data(DataConfig(train=str(conll), strict_tags=True, tag_scheme="IOB2"), wordpiece)


def test_conll_lines_with_different_column_counts(tmp_path):
    conll = tmp_path / "d.conll"
    conll.write_text("john NNP I-PER\nlives VBZ O\n\nparis I-LOC\n")
    with pytest.raises(DataError, match=r"d.conll, line 4: 2 columns, but line 1 has 3; every token line of a CoNLL "
                                        r"file needs the same columns"):
        read_table(conll)


def test_a_tokenizer_without_word_ids(tmp_path):
    from transformers import BertTokenizerLegacy

    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB))
    slow = BertTokenizerLegacy(str(tmp_path / "vocab.txt"))
    path = _jsonl(tmp_path / "d.jsonl", ROWS)
    with pytest.raises(ModelError, match=r"token classification needs a fast tokenizer, which maps sub-tokens to "
                                         r"words; BertTokenizerLegacy is not one"):
        load_task_data(DataConfig(train=str(path), eval=str(path)), slow)


def test_text_pair_and_a_too_short_max_length_are_config_errors(tmp_path, wordpiece):
    path = _jsonl(tmp_path / "d.jsonl", ROWS)
    with pytest.raises(ConfigError, match="unset --text-pair"):
        load_task_data(DataConfig(train=str(path), text_pair="x", task="token_classification"), wordpiece)
    with pytest.raises(ConfigError, match="data.max_length=3 leaves 1 sub-tokens"):
        spec = tasks.TaskSpec("token_classification", ["O", "B-LOC", "B-MISC", "I-MISC", "B-PER"])
        load_labelled(str(path), DataConfig(max_length=3), spec, wordpiece)


def test_text_input_is_split_into_words_with_their_character_offsets(tmp_path):
    table = read_table(_jsonl(tmp_path / "t.jsonl", [{"text": "John lives in Washington."}]))
    rows = read_words(table, "text", None)
    assert rows.words == [["John", "lives", "in", "Washington", "."]] and rows.given == [True]
    assert [rows.texts[0][a:b] for a, b in rows.spans[0]] == rows.words[0]


def test_align_ignores_special_tokens(tmp_path, wordpiece):
    table = read_table(_jsonl(tmp_path / "d.jsonl", ROWS))
    enc = encode_words(read_words(table, "tokens", "ner_tags"), wordpiece, 32, None)
    labels = align(enc, [np.array([4, 0, 0, 1, 0]), np.array([2, 3, 0, 0])], all_subtokens=False)
    assert (labels[enc.words < 0] == IGNORE).all() and (labels >= 0).sum() == 9


def test_a_validation_split_and_a_subset_keep_each_sentence_s_windows_together(tmp_path, wordpiece):
    rows = [{"tokens": ["john", "lives", "in", "washington", "."] * (1 + i % 3),
             "ner_tags": ["B-PER", "O", "O", "B-LOC", "O"] * (1 + i % 3)} for i in range(20)]
    cfg = DataConfig(train=str(_jsonl(tmp_path / "d.jsonl", rows)), max_length=8, stride=2, val_fraction=0.25)
    data = load_task_data(cfg, wordpiece)
    assert (data.train.n_inputs, data.eval.n_inputs) == (15, 5) and len(data.train) + len(data.eval) > 40
    for enc in (data.train, data.eval):
        words = {i: enc.words[enc.scored & (enc.inputs[enc.token_rows()] == i)] for i in range(enc.n_inputs)}
        assert all(sorted(w.tolist()) == list(range(len(w))) and len(w) % 5 == 0 for w in words.values())
    subset = load_task_data(DataConfig(**{**vars(cfg), "max_train_samples": 4}), wordpiece).train
    assert subset.n_inputs == 4 and subset.scored.sum() in range(20, 61, 5)


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet"])
def test_token_and_tag_lists_read_alike_from_jsonl_json_and_parquet(fmt, tmp_path, wordpiece):
    path = tmp_path / f"d.{fmt}"
    if fmt == "jsonl":
        _jsonl(path, ROWS)
    elif fmt == "json":
        path.write_text(json.dumps(ROWS))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.Table.from_pylist(ROWS), path)
    data = load_task_data(DataConfig(train=str(path), eval=str(path)), wordpiece)
    assert data.spec.labels == ["O", "B-LOC", "B-MISC", "I-MISC", "B-PER"] and data.train.scored.sum() == 9
