"""The served model on its own: counting tokens in the requests' threads (and the event loop's) while the model's
thread predicts."""

from __future__ import annotations

import threading
import time

from pretune.serve import ServeConfig
from pretune.serve.model import ServedModel, inspect


def test_counting_tokens_beside_the_model_never_lets_an_untruncated_text_through(classifier):
    """A fast tokenizer keeps its truncation setting in shared state: counting (untruncated) in other threads
    while the model's thread encodes (truncated to 16) once fed the model 92 positions of a 64-position model."""
    model = ServedModel(inspect(str(classifier), 16), ServeConfig(path=str(classifier), threads=1, max_length=16))
    long = " ".join(["good", "bad", "film"] * 30)
    tokens = model.prepare([long], None)[0]
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
        if model.prepare([long] * 4, None, on_loop=on_loop) != [tokens] * 4:
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
