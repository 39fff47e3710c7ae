"""The training tasks of the portfolio matrix: real data sets from ``shared/data``, each as a seeded subset.

Every task reads its folder's files as their README describes them (GLUE TSVs with ``QUOTE_NONE``, MRPC's
byte-order mark, BANKING77's CRLF CSV with quoted newlines, ...), and ``write_subset`` turns that into
``train.jsonl`` (at most 2,000 rows) and ``dev.jsonl`` (at most 500) with the columns ``text``, ``text_pair``
(pairs only) and ``label`` (a class name, or a float for regression). The same steps for every task:

1. clean each text: drop the stray emoji variation selector U+FE0F (TweetEval), collapse whitespace and
   line breaks (BANKING77's quoted newlines, IMDB's ``<br />``), drop rows left empty (TweetEval hate);
2. de-duplicate each split on the case-folded text (and pair): a repeated row is kept once, a text whose copies
   carry different classes (emotion, TweetEval) is dropped as unlearnable noise;
3. dev: the official dev/validation split when there is one, less every row whose text (and pair) also occurs in
   the train split (CLINC150's relabelled "turn up your volume", emotion's 5 shared tweets, ...); otherwise a
   seeded split of train, disjoint by construction (QNLI: whole questions go to one side);
4. a seeded subset of each, stratified by class so that every class keeps a row (CLINC150: 151 classes in 2,000
   rows), in a seeded order; dev rows whose class the train subset lacks are dropped.

A subset depends only on (task, seed): every random choice draws from ``random.Random("task/seed/step")``
(string seeds hash with SHA-512, the same on every machine and Python 3 version).

``max_length`` was chosen from the token lengths of the seed-0 train subsets under MiniLM's tokenizer (text and
pair together, [CLS]/[SEP] included), as the smallest of 64/128/256 that holds 99% of rows (the dry run of
``run_matrix.py`` prints them again). The metric is the one pretune selects on: accuracy, Pearson for regression;
every other metric (macro-F1, MCC, Spearman) lands in the matrix too.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("PRETUNE_DATA", ROOT.parent / "shared" / "data"))
MAX_TRAIN, MAX_DEV = 2000, 500
SUBSET_FILE = "subset.json"


@dataclass
class Source:
    """The rows of a data set as read: ``{"text", "label"[, "text_pair"]}``; ``dev`` None: split from train."""
    train: list[dict]
    dev: Optional[list[dict]]
    origin: str  # where train and dev come from, for subset.json


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # classification | regression
    max_length: int
    read: Callable[[Path], Source]  # the data folder -> rows
    pair: bool = False
    default: bool = True  # in the matrix unless --tasks names it
    group: Optional[str] = None  # rows sharing this column's value stay on one side of a dev split

    @property
    def metric(self) -> str:
        return "pearson" if self.kind == "regression" else "accuracy"


# ----------------------------------------------------------------------------- readers, one per file format


def _row(text, label, pair=None) -> dict:
    row = {"text": text, "label": label}
    if pair is not None:
        row["text_pair"] = pair
    return row


def _tsv(path: Path, text: str, label: str, pair: Optional[str] = None, labels: Optional[dict] = None) -> list[dict]:
    """A GLUE TSV: bare quotes are data (``QUOTE_NONE``), a byte-order mark is dropped (``utf-8-sig``)."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [_row(r[text], labels[r[label]] if labels else r[label], r[pair] if pair else None) for r in reader]


def _jsonl(path: Path, label: str = "label", pair: bool = False, labels: Optional[dict] = None) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                y = labels[r[label]] if labels else r[label]
                rows.append(_row(r["text"], y, r["text_pair"] if pair else None))
    return rows


def read_sst2(d: Path) -> Source:
    names = {"0": "negative", "1": "positive"}
    return Source(_tsv(d / "sst2/train.tsv", "sentence", "label", labels=names),
                  _tsv(d / "sst2/dev.tsv", "sentence", "label", labels=names), "sst2/train.tsv, sst2/dev.tsv")


def read_mrpc(d: Path) -> Source:
    names = {"0": "not_equivalent", "1": "equivalent"}
    cols = dict(text="#1 String", pair="#2 String", label="Quality", labels=names)
    return Source(_tsv(d / "mrpc/train.tsv", **cols), _tsv(d / "mrpc/dev.tsv", **cols),
                  "mrpc/train.tsv, mrpc/dev.tsv (GLUE; BOM)")


def read_stsb(d: Path) -> Source:
    def rows(name):
        return [dict(r, label=float(r["label"])) for r in _tsv(d / "stsb" / name, "sentence1", "score", "sentence2")]
    return Source(rows("train.tsv"), rows("dev.tsv"), "stsb/train.tsv, stsb/dev.tsv (GLUE)")


def read_trec(d: Path) -> Source:
    # no dev split; TREC_10 is the test set and stays out of the matrix
    return Source(_jsonl(d / "trec/train.jsonl"), None, "seeded split of trec/train.jsonl (6 coarse labels)")


def read_sick(d: Path) -> Source:
    return Source(_jsonl(d / "sick/train.jsonl", pair=True), _jsonl(d / "sick/dev.jsonl", pair=True),
                  "sick/train.jsonl, sick/dev.jsonl (SemEval TRAIN / TRIAL; entailment label)")


def read_sick_r(d: Path) -> Source:
    def rows(name):
        return _jsonl(d / "sick" / name, label="relatedness_score", pair=True)
    return Source(rows("train.jsonl"), rows("dev.jsonl"), "sick/train.jsonl, sick/dev.jsonl (relatedness 1-5)")


def read_banking77(d: Path) -> Source:
    # RFC-4180 CSV with CRLF and quoted newlines inside texts: csv with newline="" reads it right
    with open(d / "banking77/train.csv", encoding="utf-8", newline="") as f:
        rows = [_row(r["text"], r["category"]) for r in csv.DictReader(f)]
    return Source(rows, None, "seeded stratified split of banking77/train.csv (no dev split)")


def read_clinc150(d: Path) -> Source:
    return Source(_jsonl(d / "clinc150/train.jsonl"), _jsonl(d / "clinc150/dev.jsonl"),
                  "clinc150/train.jsonl, clinc150/dev.jsonl (150 intents + oos, 151-way)")


def read_emotion(d: Path) -> Source:
    return Source(_jsonl(d / "emotion/train.jsonl"), _jsonl(d / "emotion/dev.jsonl"),
                  "emotion/train.jsonl, emotion/dev.jsonl")


def tweeteval(sub: str) -> Callable[[Path], Source]:
    def read(d: Path) -> Source:
        folder = d / "tweeteval" / sub
        return Source(_jsonl(folder / "train.jsonl", label="label_name"),
                      _jsonl(folder / "dev.jsonl", label="label_name"), f"tweeteval/{sub} train, dev")
    return read


def read_wnli(d: Path) -> Source:
    names = {0: "not_entailment", 1: "entailment"}
    return Source(_jsonl(d / "wnli/train.jsonl", pair=True, labels=names),
                  _jsonl(d / "wnli/dev.jsonl", pair=True, labels=names), "wnli/train.jsonl, wnli/dev.jsonl")


def read_qnli(d: Path) -> Source:
    # only GLUE's dev set is here: split it, a question's candidate sentences all on one side
    return Source(_jsonl(d / "qnli/dev.jsonl", pair=True), None,
                  "seeded split of qnli/dev.jsonl by question (GLUE dev; no train split available)")


def read_imdb(d: Path) -> Source:
    names = {0: "neg", 1: "pos"}
    rows = _jsonl(d / "imdb/train.jsonl", labels=names)
    for r in rows:
        r["text"] = r["text"].replace("<br />", " ")
    return Source(rows, None, "seeded stratified split of imdb/train.jsonl (3,000-review subset)")


# Token lengths of the seed-0 train subsets (MiniLM tokenizer, [CLS]/[SEP] and the pair included), p99 / max:
# sst2 47/56, mrpc 83/100, stsb 75/125, trec 26/41, sick 44/55, banking77 53/83, clinc150 21/31, emotion 57/64,
# tweet_hate 73/90, tweet_offensive 109/171, tweet_irony 44/93, tweet_emotion 46/56, tweet_emoji 37/61,
# qnli 117/172, wnli 89/108, sick_r 44/53, imdb 1142/2166 (median 224). Batches are padded to their longest row,
# so max_length only truncates: it costs time only where rows are that long.
TASKS: dict[str, Task] = {t.name: t for t in [
    Task("sst2", "classification", 64, read_sst2),
    Task("mrpc", "classification", 128, read_mrpc, pair=True),
    Task("stsb", "regression", 128, read_stsb, pair=True),
    Task("trec", "classification", 64, read_trec),
    Task("sick", "classification", 64, read_sick, pair=True),
    Task("banking77", "classification", 64, read_banking77),
    Task("clinc150", "classification", 64, read_clinc150),
    Task("emotion", "classification", 64, read_emotion),
    Task("tweet_hate", "classification", 128, tweeteval("hate")),
    Task("tweet_offensive", "classification", 128, tweeteval("offensive")),
    Task("tweet_irony", "classification", 64, tweeteval("irony")),
    Task("tweet_emotion", "classification", 64, tweeteval("emotion")),
    Task("tweet_emoji", "classification", 64, tweeteval("emoji")),
    Task("qnli", "classification", 128, read_qnli, pair=True, group="text"),
    # opt-in (--tasks): WNLI's dev is adversarial to train (everything scores near the 56% majority, so it ranks
    # configurations by noise); SICK-R repeats SICK's texts; IMDB is long (256 tokens: about 4x a 64-token task)
    Task("wnli", "classification", 128, read_wnli, pair=True, default=False),
    Task("sick_r", "regression", 64, read_sick_r, pair=True, default=False),
    Task("imdb", "classification", 256, read_imdb, default=False),
]}


def select(names: Optional[str]) -> list[Task]:
    """The tasks named in ``"a,b"`` (``None`` or ``"default"``: the default set; ``"all"``: every task)."""
    if names in (None, "", "default"):
        return [t for t in TASKS.values() if t.default]
    if names == "all":
        return list(TASKS.values())
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in TASKS]
    if unknown:
        raise SystemExit(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(TASKS)} (or default, all)")
    return [TASKS[n] for n in wanted]


# ----------------------------------------------------------------------------- cleaning and de-duplication


def clean(text) -> str:
    """No U+FE0F (left where TweetEval stripped an emoji), whitespace and line breaks collapsed to one space."""
    return " ".join(str(text).replace("\ufe0f", " ").split())


def _key(row: dict) -> str:
    return (row["text"].casefold() + "\t" + row.get("text_pair", "").casefold()).strip()


def _clean_rows(rows: list[dict], counts: Counter, split: str) -> list[dict]:
    out = []
    for r in rows:
        r = dict(r, text=clean(r["text"]))
        if "text_pair" in r:
            r["text_pair"] = clean(r["text_pair"])
        if not r["text"] or ("text_pair" in r and not r["text_pair"]):
            counts[f"{split}_empty_dropped"] += 1
            continue
        if isinstance(r["label"], str):
            r["label"] = r["label"].strip()
        out.append(r)
    return out


def _dedupe(rows: list[dict], kind: str, counts: Counter, split: str) -> list[dict]:
    """One row per key; a classification key whose copies disagree on the class is dropped altogether."""
    by_key: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_key[_key(r)].append(r)
    out = []
    for group in by_key.values():  # insertion order: file order of each key's first row
        if kind == "classification" and len({r["label"] for r in group}) > 1:
            counts[f"{split}_conflicting_dropped"] += len(group)
            continue
        counts[f"{split}_duplicates_dropped"] += len(group) - 1
        out.append(group[0])
    return out


# ----------------------------------------------------------------------------- seeded sampling


def _rng(task: Task, seed: int, step: str) -> random.Random:
    return random.Random(f"portfolio/{task.name}/{seed}/{step}")


def stratified_sample(rows: list[dict], k: int, rng: random.Random, by_class: bool) -> list[dict]:
    """``k`` rows in a seeded order; per class in proportion (largest remainder), each class at least one row."""
    if k >= len(rows):
        out = list(rows)
        rng.shuffle(out)
        return out
    if not by_class:
        return rng.sample(rows, k)
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[str(r["label"])].append(r)
    names = sorted(groups)
    exact = {c: k * len(groups[c]) / len(rows) for c in names}
    quota = {c: max(1, math.floor(exact[c])) for c in names}
    by_remainder = sorted(names, key=lambda c: (-(exact[c] - math.floor(exact[c])), c))
    i = 0
    while sum(quota.values()) < k:  # hand out the remainder, largest fractions first
        c = by_remainder[i % len(names)]
        if quota[c] < len(groups[c]):
            quota[c] += 1
        i += 1
    while sum(quota.values()) > k:  # the minimum of one row overshot: take back from the largest classes
        c = max(names, key=lambda n: (quota[n], n))
        quota[c] -= 1
    out = [r for c in names for r in rng.sample(groups[c], quota[c])]
    rng.shuffle(out)
    return out


def split_dev(task: Task, rows: list[dict], seed: int) -> tuple[list[dict], list[dict]]:
    """(train pool, dev) from one de-duplicated split: ``MAX_DEV`` rows (at most a fifth of them) for dev,
    stratified by class, or whole groups (``task.group``) until dev holds ``MAX_DEV`` rows."""
    rng = _rng(task, seed, "split")
    n_dev = min(MAX_DEV, len(rows) // 5)
    if task.group is None:
        dev = stratified_sample(rows, n_dev, rng, task.kind == "classification")
        taken = {id(r) for r in dev}
        return [r for r in rows if id(r) not in taken], dev
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r[task.group].casefold()].append(r)
    order = sorted(groups)
    rng.shuffle(order)
    dev_keys: set[str] = set()
    n = 0
    for g in order:
        if n >= n_dev:
            break
        dev_keys.add(g)
        n += len(groups[g])
    dev = [r for r in rows if r[task.group].casefold() in dev_keys]
    return [r for r in rows if r[task.group].casefold() not in dev_keys], dev


# ----------------------------------------------------------------------------- writing


@dataclass
class Subset:
    task: Task
    seed: int
    folder: Path
    counts: dict

    @property
    def train(self) -> Path:
        return self.folder / "train.jsonl"

    @property
    def dev(self) -> Path:
        return self.folder / "dev.jsonl"


def _write_if_changed(path: Path, text: str) -> None:
    """Rewrite only when the content differs: an unchanged subset keeps its file (and pretune's token cache)."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    from pretune.files import write_text  # atomic; pretune.files imports no torch

    write_text(path, text)


def _jsonl_text(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def build(task: Task, seed: int, data_dir: Path = DATA, max_train: int = MAX_TRAIN) -> tuple[list[dict], list[dict],
                                                                                          dict]:
    """(train rows, dev rows, counts) of ``task``'s subset for ``seed``, in memory (at most ``max_train`` training
    rows: the matrix's subsets; a larger number keeps the whole de-duplicated training pool)."""
    src = task.read(data_dir)
    counts: Counter = Counter(source_train=len(src.train))
    train = _dedupe(_clean_rows(src.train, counts, "train"), task.kind, counts, "train")
    if src.dev is None:
        train, dev = split_dev(task, train, seed)
    else:
        counts["source_dev"] = len(src.dev)
        dev = _dedupe(_clean_rows(src.dev, counts, "dev"), task.kind, counts, "dev")
        seen = {_key(r) for r in train}
        counts["dev_in_train_dropped"] = sum(_key(r) in seen for r in dev)
        dev = [r for r in dev if _key(r) not in seen]
    counts["train_pool"], counts["dev_pool"] = len(train), len(dev)
    by_class = task.kind == "classification"
    train = stratified_sample(train, max_train, _rng(task, seed, "train"), by_class)
    dev = stratified_sample(dev, MAX_DEV, _rng(task, seed, "dev"), by_class)
    if by_class:
        classes = {r["label"] for r in train}
        counts["dev_unseen_class_dropped"] = sum(r["label"] not in classes for r in dev)
        dev = [r for r in dev if r["label"] in classes]
        counts["classes"] = len(classes)
    counts["train"], counts["dev"] = len(train), len(dev)
    return train, dev, {"origin": src.origin, **{k: v for k, v in counts.items() if v or k in ("train", "dev")}}


def write_subset(task: Task, seed: int, work: Path, data_dir: Path = DATA, max_train: int = MAX_TRAIN) -> Subset:
    """Write ``WORK/data/TASK/seedN/{train,dev}.jsonl`` and ``subset.json`` (the counts); returns the ``Subset``.

    Raises:
        FileNotFoundError: the data folder lacks the task's files (set PRETUNE_DATA or --data).
    """
    train, dev, counts = build(task, seed, data_dir, max_train)
    folder = Path(work) / "data" / task.name / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    _write_if_changed(folder / "train.jsonl", _jsonl_text(train))
    _write_if_changed(folder / "dev.jsonl", _jsonl_text(dev))
    info = {"task": task.name, "seed": seed, "kind": task.kind, "metric": task.metric,
            "max_length": task.max_length, "data": str(data_dir), **counts}
    _write_if_changed(folder / SUBSET_FILE, json.dumps(info, indent=2) + "\n")
    return Subset(task, seed, folder, counts)


def data_config(subset: Subset, cache_dir: Path) -> dict:
    """The ``data`` section of a pretune config for ``subset``."""
    task = subset.task
    return {"train": str(subset.train), "eval": str(subset.dev), "text": "text",
            "text_pair": "text_pair" if task.pair else None, "label": "label", "task": task.kind,
            "max_length": task.max_length, "cache_dir": str(cache_dir)}


def token_lengths(subset: Subset, tokenizer) -> list[int]:
    """Tokens per train row (text and pair together, special tokens included), untruncated."""
    rows = [json.loads(line) for line in subset.train.read_text(encoding="utf-8").splitlines()]
    texts = [r["text"] for r in rows]
    pairs = [r["text_pair"] for r in rows] if subset.task.pair else None
    enc = tokenizer(texts, pairs, truncation=False) if pairs else tokenizer(texts, truncation=False)
    return [len(ids) for ids in enc["input_ids"]]
