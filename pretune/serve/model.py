"""The model a server answers with: loaded by the bench runtimes, read by its task, as ``pretune predict`` reads it.

``inspect`` finds what a path names without loading weights (the folder, its variant, its task, the length
limit), so that a bad path or an unservable model is a one-line error before the server starts.
``ServedModel`` holds the runner and answers a list of texts with the task's rows:

    texts ──task.read──▶ examples ──task.encode──▶ Encoded ──task.collate──▶ padded batch
          ──runner.predict──▶ logits ──place_outputs──▶ outputs ──task.rows──▶ one row per text

For the tasks that read one text (or pair) per row and give one output per row (classification, regression), a
request's texts skip the task's reading and encoding: they were checked when the request came in, and the model's
thread calls the Rust tokenizer directly and pads in numpy (``SequenceEncoder``): the same batches without the
tokenizer's Python wrapper and torch's tensors, about 0.4 ms less on every call, which one client waits for.

Every format ``pretune compress`` writes loads here (``pretune.bench.runtimes.load_runner``); the rows are the
ones ``pretune predict`` writes for the same task (classification: ``label`` and ``probabilities``; regression:
``score``; token classification: ``tokens``, ``tags`` and ``entities``).
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Callable, Optional

import numpy as np

from .. import tasks
from ..compress.formats import Located, locate  # what compress writes: serve loads the recommended variant
from ..config import DataConfig
from ..data import Table, collate, place_outputs
from ..errors import ConfigError, DataError, ModelError
from .config import DEFAULT_MAX_LENGTH, ServeConfig

log = logging.getLogger("pretune.serve")
MEASURE_LENGTH = 1 << 30  # encode without truncation, to count a text's tokens
Payload = tuple[str, Optional[str]]  # (text, text pair or None)


class SequenceEncoder:
    """Texts (and pairs) to a padded batch of numpy inputs with the Rust tokenizer alone: the token ids the
    sentence tasks' ``encode`` and ``collate`` give (truncated to ``max_length``, longest first for pairs, special
    tokens added), without the tokenizer's Python wrapper or torch. Use ``SequenceEncoder.make``, which returns one
    only when its batches equal the task's own on probe texts."""

    PROBES = (["warm up the model", "an unusually long text " * 200], ["a pair", "of texts " * 200])

    def __init__(self, tokenizer, max_length: int, pad_id: int):
        self.backend = copy.deepcopy(tokenizer.backend_tokenizer)  # its own truncation and padding state
        self.backend.no_padding()
        self.backend.enable_truncation(max_length, strategy="longest_first",
                                       direction=getattr(tokenizer, "truncation_side", "right"))
        self.pad_id = pad_id
        self.type_ids = "token_type_ids" in getattr(tokenizer, "model_input_names", ())

    @classmethod
    def make(cls, task, tokenizer, max_length: int, pad_id: int, reference: Callable) -> Optional["SequenceEncoder"]:
        """The encoder for ``task``, or None: a task that is not sentence-level, a tokenizer without a Rust
        backend, or batches that differ from the task's own on the probe texts (a wrapper that adds Python-side
        processing). ``reference(texts, pairs)`` is the task's own padded batch, as numpy arrays."""
        from ..tasks import sentences

        if task.encode is not sentences.encode or task.collate is not collate:
            return None
        if getattr(tokenizer, "backend_tokenizer", None) is None:
            return None
        try:
            encoder = cls(tokenizer, max_length, pad_id)
            for texts, pairs in ((cls.PROBES[0], None), (cls.PROBES[0], cls.PROBES[1])):
                want, got = reference(texts, pairs), encoder(texts, pairs)
                if set(got) != set(want) or any(not np.array_equal(got[k], want[k]) for k in got):
                    log.debug("the Rust tokenizer alone encodes differently from the task: texts go through the "
                              "task's encoding")
                    return None
        except Exception:  # an unusual tokenizer: the task's own path serves it
            log.debug("no direct tokenizer path", exc_info=True)
            return None
        return encoder

    def __call__(self, texts: list[str], pairs: Optional[list[str]]) -> dict[str, np.ndarray]:
        encodings = self.backend.encode_batch(texts if pairs is None else list(zip(texts, pairs)))
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        types = np.zeros((len(encodings), width), dtype=np.int64) if self.type_ids else None
        for j, e in enumerate(encodings):
            n = len(e.ids)
            ids[j, :n] = e.ids
            mask[j, :n] = 1
            if types is not None:
                types[j, :n] = e.type_ids
        return {"input_ids": ids, "attention_mask": mask, **({"token_type_ids": types} if types is not None else {})}


@dataclass(frozen=True)
class Target:
    """What a server path names: the folder and variant to load, the model's task, and the length limit."""

    path: str
    located: Located
    spec: tasks.TaskSpec
    max_length: int

    def info(self) -> dict[str, str]:
        return {"model": self.path, "variant": self.located.variant, "format": self.located.format,
                "task": self.spec.task}


def inspect(path: str, max_length: Optional[int] = None) -> Target:
    """The folder ``path`` names (``compress.formats.locate``), its task and the token limit, without the weights.

    Raises:
        ModelError: no model there. ConfigError: a task whose answer is generated text, or a --max-length over
            the model's positions.
    """
    from transformers import AutoConfig

    located = locate(path)
    if not (located.folder / "config.json").is_file():
        raise ModelError(f"{located.folder}: no config.json; pretune serve loads model and variant folders")
    try:
        config = AutoConfig.from_pretrained(str(located.folder))
    except (ValueError, OSError) as e:
        raise ModelError(f"{located.folder}: cannot read config.json ({str(e).splitlines()[0]})") from None
    spec = tasks.spec_from_config(config)
    task = tasks.get(spec.task)
    if task.generates or task.forward is not None:
        servable = ", ".join(n for n in tasks.names() if not tasks.get(n).generates)
        raise ConfigError(f"{path}: a {spec.task} model writes text, which pretune serve does not do (use pretune "
                          f"generate); it serves {servable} models")
    limit = getattr(config, "max_position_embeddings", None)
    if max_length is None:
        max_length = min(DEFAULT_MAX_LENGTH, limit or DEFAULT_MAX_LENGTH)
    elif limit and max_length > limit:
        raise ConfigError(f"--max-length {max_length}: the model has {limit} positions; pass --max-length {limit} "
                          "or less")
    return Target(str(path), located, spec, max_length)


class ServedModel:
    """A loaded model answering lists of texts with its task's rows. ``predict`` runs in one thread at a time (the
    model's); ``prepare`` in any thread."""

    def __init__(self, target: Target, cfg: ServeConfig):
        from ..bench.runtimes import load_runner  # every format compress writes
        from ..runtime import resolve

        self.target = target
        self.runner, _, self.tokenizer = load_runner(target.located.folder, cfg.threads,
                                                     resolve(cfg.device, cfg.precision), spin=False)
        self.task = tasks.get(target.spec.task)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.on_long = cfg.on_long
        # A fast tokenizer keeps its truncation setting in shared state that each call may change: the requests
        # count tokens untruncated with copies of their own (one for the event loop's thread, one shared by the
        # thread pool, one call at a time), while the model's thread encodes truncated with the original (shared,
        # a text could reach the model untruncated).
        self._counting_on_loop = copy.deepcopy(self.tokenizer)
        self._counting = copy.deepcopy(self.tokenizer)
        self._counting_lock = threading.Lock()
        self.direct = SequenceEncoder.make(self.task, self.tokenizer, target.max_length, self.pad_id,
                                           lambda texts, pairs: self._task_batch(texts, pairs)[0])

    def info(self) -> dict[str, str]:
        return {**self.target.info(), "backend": self.runner.backend}

    def _examples(self, texts: list[str], pairs: Optional[list[str]]):
        """The task's examples of ``texts`` (and ``pairs``), checked as a file's rows would be."""
        columns = {"text": texts, **({"text_pair": pairs} if pairs is not None else {})}
        table = Table("request", columns, list(range(len(texts))), line_word="text")
        cfg = DataConfig(text="text", text_pair="text_pair" if pairs is not None else None,
                         max_length=self.target.max_length)
        return self.task.read(table, cfg, labelled=False), cfg

    def prepare(self, texts: list[str], pairs: Optional[list[str]], on_loop: bool = False) -> list[int]:
        """Check a request's texts (the task's checks of a file's rows) and size them for the batcher's grouping.
        The sizes are characters, which order texts as their tokens do, at no cost; with ``--on-long refuse`` they
        are tokens, counted untruncated to refuse a text over the limit. ``on_loop``: called on the event loop's
        thread (a short request, for which a hop to the thread pool would cost more than the work); else in any
        thread.

        Raises:
            DataError: an empty text, or (``--on-long refuse``) a text over the length limit.
            ConfigError: a text pair for a task that reads one sequence.
        """
        examples, cfg = self._examples(texts, pairs)
        if self.on_long != "refuse":
            return [len(t) + (len(pairs[i]) if pairs is not None else 0) for i, t in enumerate(texts)]
        lengths = self.count_tokens(examples, cfg, len(texts), on_loop)
        for i, n in enumerate(lengths):
            if n > self.target.max_length:
                raise DataError(f"text {i}: {n} tokens, over the limit of {self.target.max_length} "
                                "(--max-length); shorten it, or start the server with --on-long truncate")
        return lengths

    def count_tokens(self, examples, cfg: DataConfig, n: int, on_loop: bool = False) -> list[int]:
        """The untruncated token count of each of the ``n`` texts of ``examples`` (``_examples``), as the task
        encodes them (special tokens included; a text split into windows counts them all)."""
        with nullcontext() if on_loop else self._counting_lock:
            enc = self.task.encode(examples, self._counting_on_loop if on_loop else self._counting,
                                   replace(cfg, max_length=MEASURE_LENGTH), None, None, self.target.spec)
        inputs = enc.inputs if enc.inputs is not None else np.arange(len(enc))
        return np.bincount(inputs, weights=enc.lengths, minlength=n).astype(int).tolist()

    def predict(self, payloads: list[Payload]) -> list[dict]:
        """One row per payload, in order (texts with and without a pair run as two groups)."""
        rows: list = [None] * len(payloads)
        for has_pair in (False, True):
            idx = [i for i, (_, pair) in enumerate(payloads) if (pair is not None) == has_pair]
            if idx:
                texts = [payloads[i][0] for i in idx]
                pairs = [payloads[i][1] for i in idx] if has_pair else None
                for i, row in zip(idx, self._rows(texts, pairs)):
                    rows[i] = row
        return rows

    def _rows(self, texts: list[str], pairs: Optional[list[str]]) -> list[dict]:
        if self.direct is not None:  # checked by prepare already; one output per text, which the rows read alone
            return self.task.rows(self.runner.predict(self.direct(texts, pairs)), None, self.target.spec, None)
        batch, enc, examples = self._task_batch(texts, pairs)
        logits = self.runner.predict(batch)
        return self.task.rows(place_outputs(None, enc, np.arange(len(enc)), logits), enc, self.target.spec, examples)

    def _task_batch(self, texts: list[str], pairs: Optional[list[str]]):
        """(one padded batch of numpy inputs, Encoded, examples) by the task's own reading and encoding."""
        examples, cfg = self._examples(texts, pairs)
        enc = self.task.encode(examples, self.tokenizer, cfg, None, None, self.target.spec)
        batch = self.task.collate(enc, np.arange(len(enc)), self.pad_id)  # one batch: the batcher sized it
        batch.pop("labels", None)
        return {k: v.numpy() for k, v in batch.items()}, enc, examples

    def warm_up(self, batch_size: int) -> float:
        """Run a batch of one text and a full batch (the first calls allocate); returns the seconds taken."""
        t0 = time.perf_counter()
        for n in (1, batch_size):
            self.predict([("warm up the model", None)] * n)
        return time.perf_counter() - t0


def load(target: Target, cfg: ServeConfig) -> ServedModel:
    """Load and warm up the model of ``target``; logs what it serves and how long that took."""
    t0 = time.perf_counter()
    model = ServedModel(target, cfg)
    warm = model.warm_up(cfg.max_batch_size)
    info = model.info()
    log.info("serving %s (variant %s, %s, %s on %s): loaded in %.1f s, warmed up in %.1f s", info["model"],
             info["variant"], info["task"], info["format"], info["backend"], time.perf_counter() - t0 - warm, warm)
    return model
