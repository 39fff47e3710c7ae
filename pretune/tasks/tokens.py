"""Token classification: a tag per word (named entities, part of speech, slots), scored on the entities the tags
mark.

Rows hold a list of tokens and a list of tags (``tokens`` / ``ner_tags`` or ``tags`` unless named), or come
from a CoNLL file; tags are strings, or integers named by ``data.label_names``. A word's tag is learnt at its
first sub-token (every sub-token with ``data.label_all_subtokens``); long sentences are cut into windows
(``words``); metrics are entity precision, recall and F1 from seqeval in its default and strict modes, F1 per
entity type and token accuracy (``tags``).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..config import DataConfig
from ..data import IGNORE, Encoded, Table, collate
from ..data.readers import is_missing
from ..errors import ConfigError, DataError
from . import tags as tagging
from .base import Task, TaskSpec, register
from .words import WordRows, encode_words, first_subtokens, read_words


def read(table: Table, cfg: DataConfig, labelled: bool = True) -> WordRows:
    """The words of ``cfg.text`` and (if ``labelled``) the tag lists of ``cfg.label``, checked."""
    if cfg.text_pair:
        raise ConfigError(f"data.text_pair={cfg.text_pair!r}: token classification tags one sequence of words; "
                          "unset --text-pair")
    return read_words(table, cfg.text, cfg.label if labelled else None)


def looks_like(raw: list) -> bool:
    """Every label is a list (of tags)."""
    present = [v for v in raw if not is_missing(v)]
    return bool(present) and all(isinstance(v, (list, tuple, np.ndarray)) for v in present)


def _tag_names(raw: list, table: Table, column: str, names: Optional[list[str]]) -> list[list[str]]:
    """Every row's tags as names: integer tags index ``names``."""
    out = []
    for i, row in enumerate(raw):
        if not isinstance(row, (list, tuple, np.ndarray)):
            raise DataError(f"{table.where(i)}, column {column!r}: expected a list of tags, got "
                            f"{'nothing' if is_missing(row) else repr(row)[:40]}; every row needs one tag per token")
        tags = []
        for k, tag in enumerate(row):
            if isinstance(tag, (int, np.integer)) and not isinstance(tag, bool):
                if names is None:
                    raise DataError(f"{table.where_item(i, k)}, column {column!r}: integer tag {tag} has no name; set "
                                    "data.label_names to the tag names in id order (e.g. [O, B-PER, I-PER])")
                if not 0 <= tag < len(names):
                    raise DataError(f"{table.where_item(i, k)}, column {column!r}: tag id {tag} is outside the "
                                    f"{len(names)} names in id order ({', '.join(names)}); fix the tag")
                tag = names[tag]
            elif is_missing(tag) or not str(tag).strip():
                raise DataError(f"{table.where_item(i, k)}, column {column!r}: empty tag; every token needs one")
            tags.append(str(tag).strip())
        out.append(tags)
    return out


def _check_scheme(sequences: list[list[str]], scheme: Optional[str], table: Table, column: str) -> None:
    """With ``data.strict_tags``: the first tag its scheme does not allow where it stands is an error."""
    if scheme is None:
        return
    for i, seq in enumerate(sequences):
        bad = tagging.first_invalid(seq, scheme)
        if bad is not None:
            k, why = bad
            raise DataError(f"{table.where_item(i, k)}, column {column!r}: tag {seq[k]!r} after "
                            f"{seq[k - 1] if k else 'the sentence start'!r}: {why}; fix the tag, set data.tag_scheme "
                            "to the file's scheme, or data.strict_tags=false to read it as it is")


def spec(raw: list, table: Table, column: str, cfg: Optional[DataConfig] = None) -> TaskSpec:
    """The tag set (O first, then each type's B, I, E, S tags, or ``data.label_names`` in its order) and its
    scheme (``data.tag_scheme``, else read off the tags)."""
    cfg = cfg or DataConfig()
    sequences = _tag_names(raw, table, column, cfg.label_names)
    seen = {t for seq in sequences for t in seq}
    if cfg.label_names:
        unknown = sorted(seen - set(cfg.label_names))
        if unknown:
            raise DataError(f"{table.path}, column {column!r}: tags {', '.join(unknown[:5])} are not in "
                            f"data.label_names ({', '.join(cfg.label_names)}); add them there")
    names = list(cfg.label_names or tagging.label_order(seen))
    if len(names) < 2:
        raise DataError(f"{table.path}, column {column!r}: only one tag ({', '.join(names)}); token classification "
                        "needs at least two")
    if cfg.tag_scheme and not tagging.has_scheme(names):
        raise ConfigError(f"data.tag_scheme={cfg.tag_scheme}: the tags {', '.join(names[:6])} have no B-/I- "
                          "prefixes; unset data.tag_scheme")
    scheme = cfg.tag_scheme or tagging.detect_scheme(sequences)
    if cfg.strict_tags:
        _check_scheme(sequences, scheme, table, column)
    return TaskSpec("token_classification", names, {"scheme": scheme})


def labels(raw: list, spec: TaskSpec, table: Table, column: str, cfg: Optional[DataConfig] = None) -> list:
    """One array of tag ids per row; a tag the training data never had is an error."""
    cfg = cfg or DataConfig()
    index = {name: i for i, name in enumerate(spec.labels)}
    sequences = _tag_names(raw, table, column, spec.labels)  # integer tags are ids of the model's tags
    out = []
    for i, seq in enumerate(sequences):
        for k, tag in enumerate(seq):
            if tag not in index:
                raise DataError(f"{table.where_item(i, k)}, column {column!r}: tag {tag!r} does not occur in the "
                                f"training data (known: {', '.join(spec.labels)}); fix the tag or add training "
                                "rows with it")
        out.append(np.asarray([index[t] for t in seq], dtype=np.int64))
    if cfg.strict_tags:
        _check_scheme(sequences, spec.settings.get("scheme"), table, column)
    return out


def continuation(spec: TaskSpec) -> np.ndarray:
    """(C,) the tag a word's later sub-tokens learn with ``data.label_all_subtokens``: I-X for B-X (in the IOB
    schemes), the word's own tag otherwise."""
    index = {name: i for i, name in enumerate(spec.labels)}
    out = np.arange(len(spec.labels))
    if spec.settings.get("scheme") in ("IOB1", "IOB2"):
        for i, name in enumerate(spec.labels):
            prefix, kind = tagging.split_tag(name)
            if prefix == "B" and f"I-{kind}" in index:
                out[i] = index[f"I-{kind}"]
    return out


def align(enc: Encoded, targets: list, all_subtokens: bool, follow: Optional[np.ndarray] = None) -> np.ndarray:
    """(total_tokens,) each word's tag at its first sub-token (and, with ``all_subtokens``, ``follow[tag]`` at the
    others); ``IGNORE`` at special tokens and unlabelled sub-tokens."""
    lengths = np.asarray([len(t) for t in targets], dtype=np.int64)
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    flat = np.concatenate(targets) if targets else np.zeros(0, np.int64)
    word = enc.words.astype(np.int64)
    has_word = word >= 0
    tag = np.full(len(word), IGNORE, dtype=np.int64)
    tag[has_word] = flat[starts[enc.inputs[enc.token_rows()]][has_word] + word[has_word]]
    first = first_subtokens(enc)
    out = np.where(first, tag, IGNORE)
    if all_subtokens:
        rest = has_word & ~first
        out[rest] = tag[rest] if follow is None else follow[tag[rest]]
    return out


def encode(rows: WordRows, tokenizer, cfg: DataConfig, source: Optional[str], targets=None,
           spec: Optional[TaskSpec] = None) -> Encoded:
    """Windows of sub-tokens (``words.encode_words``) with each word's tag aligned to its sub-tokens."""
    enc = encode_words(rows, tokenizer, cfg.max_length, cfg.stride, cfg.cache_dir, source, (cfg.text, cfg.label))
    if targets is None:
        return enc
    follow = continuation(spec) if spec is not None else None
    return enc.with_labels(align(enc, targets, cfg.label_all_subtokens, follow))


def head(spec: TaskSpec) -> dict:
    return {"num_labels": len(spec.labels), "id2label": dict(enumerate(spec.labels)),
            "label2id": {n: i for i, n in enumerate(spec.labels)}}


def loss(logits, targets):
    """Mean cross-entropy over the tokens with a target, in fp32 (0 for a batch with none)."""
    from torch.nn import functional as F

    total = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE,
                            reduction="sum")
    return total / (targets != IGNORE).sum().clamp(min=1)


def soft_loss(student, teacher, temperature: float, mask=None):
    """KL divergence between the softened distributions at every real token, averaged, times T^2."""
    from torch.nn import functional as F

    kl = F.kl_div(F.log_softmax(student / temperature, -1), F.log_softmax(teacher / temperature, -1),
                  reduction="none", log_target=True).sum(-1)  # (B, T)
    mask = kl.new_ones(kl.shape) if mask is None else mask.to(kl.dtype)
    return (kl * mask).sum() / mask.sum().clamp(min=1) * temperature ** 2


def _by_word(enc: Encoded) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input row, word, token position) of every scored token, ordered by input row, then word."""
    pos = np.flatnonzero(enc.scored)
    rows = np.searchsorted(enc.offsets, pos, side="right") - 1
    inputs, words = enc.inputs[rows], enc.words[pos]
    order = np.lexsort((words, inputs))
    return inputs[order], words[order], pos[order]


def metrics(outputs: np.ndarray, enc: Encoded, spec: TaskSpec) -> dict:
    """Entity scores of the predicted tags (seqeval, both modes), per-type F1 and token accuracy."""
    inputs, _, pos = _by_word(enc)
    names = np.asarray(spec.labels, dtype=object)
    cuts = np.flatnonzero(np.diff(inputs)) + 1
    gold = [list(s) for s in np.split(names[enc.labels[pos]], cuts)] if len(pos) else []
    pred = [list(s) for s in np.split(names[outputs[pos].argmax(-1)], cuts)] if len(pos) else []
    return tagging.scores(gold, pred, spec.settings.get("scheme"))


def rows(outputs: np.ndarray, enc: Encoded, spec: TaskSpec, examples: WordRows) -> list[dict]:
    """Per input row: ``tokens``, ``tags`` and ``entities`` (type, token range ``start``/``end`` (exclusive),
    ``text``, ``char_start``/``char_end`` when the input was a text, and ``score``: the mean probability of the
    entity's tags)."""
    inputs, words, pos = _by_word(enc)
    z = outputs[pos] - outputs[pos].max(-1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(-1, keepdims=True)  # softmax, stable
    best = probs.argmax(-1)
    fallback = spec.labels.index(tagging.OUTSIDE) if tagging.OUTSIDE in spec.labels else 0
    out = []
    for i, row_words in enumerate(examples.words):
        ids = np.full(len(row_words), fallback)
        score = np.zeros(len(row_words))
        mine = inputs == i
        ids[words[mine]] = best[mine]
        score[words[mine]] = probs[mine, best[mine]]
        tags = [spec.labels[t] for t in ids]
        out.append({"tokens": row_words, "tags": tags,
                    "entities": [_entity(examples, i, kind, a, b, score) for kind, a, b in
                                 tagging.spans(tags, spec.settings.get("scheme"))]})
    return out


def _entity(examples: WordRows, i: int, kind: str, a: int, b: int, score: np.ndarray) -> dict[str, Any]:
    entity: dict[str, Any] = {"type": kind, "start": a, "end": b}
    if examples.given[i]:
        c0, c1 = int(examples.spans[i][a][0]), int(examples.spans[i][b - 1][1])
        entity.update(text=examples.texts[i][c0:c1], char_start=c0, char_end=c1)
    else:
        entity["text"] = " ".join(examples.words[i][a:b])
    entity["score"] = round(float(score[a:b].mean()), 6)
    return entity


TASK = register(Task(
    name="token_classification", description="one tag per word (named entities, part of speech)", read=read,
    spec=spec, labels=labels, encode=encode, head=head, loss=loss, soft_loss=soft_loss, metrics=metrics,
    default_metric="f1", rows=rows, collate=collate, model_class="AutoModelForTokenClassification",
    infer=looks_like, text_columns=("tokens",), label_columns=("ner_tags", "tags")))
