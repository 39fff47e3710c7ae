"""The server's Prometheus metrics, written in the text exposition format (version 0.0.4) without a client library.

    pretune_serve_requests_total{route, status}          counter    HTTP requests answered
    pretune_serve_request_seconds{route, status}         histogram  time from the request's arrival to its answer
    pretune_serve_requests_in_flight                     gauge      requests being handled now
    pretune_serve_batch_size                             histogram  texts per model call
    pretune_serve_batch_seconds                          histogram  time of one model call (tokenizing included)
    pretune_serve_queue_depth                            gauge      texts waiting for a batch
    pretune_serve_texts_total                            counter    texts predicted
    pretune_serve_model_info{model, variant, format, task, backend}  gauge (1)  what is served

The values live in one process: with several workers (``--workers``) each process counts its own requests and a
scrape reaches whichever worker the kernel hands the connection to.
"""

from __future__ import annotations

import bisect
import threading
from typing import Callable

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)] + ([extra] if extra else [])
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(v: float) -> str:
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


class Histogram:
    """Cumulative buckets, sum and count per label set."""

    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = tuple(buckets)
        self.series: dict[tuple, list] = {}  # labels -> [counts per bucket (+Inf last), sum]

    def observe(self, value: float, labels: tuple = ()) -> None:
        counts, _ = self.series.setdefault(labels, [[0] * (len(self.buckets) + 1), 0.0])
        counts[bisect.bisect_left(self.buckets, value)] += 1  # le is inclusive: value == bound falls in it
        self.series[labels][1] += value

    def lines(self, name: str, label_names: tuple[str, ...]) -> list[str]:
        out = []
        for labels, (counts, total) in sorted(self.series.items()):
            running = 0
            for bound, n in zip((*self.buckets, float("inf")), counts):
                running += n
                le = 'le="+Inf"' if bound == float("inf") else f'le="{_number(bound)}"'
                out.append(f"{name}_bucket{_labels(label_names, labels, le)} {running}")
            out.append(f"{name}_sum{_labels(label_names, labels)} {_number(total)}")
            out.append(f"{name}_count{_labels(label_names, labels)} {running}")
        return out


class ServeMetrics:
    """Every metric of one server process; thread-safe (the model thread and the event loop both record)."""

    def __init__(self, info: dict[str, str], queue_depth: Callable[[], int] = lambda: 0):
        self.info = dict(info)
        self.queue_depth = queue_depth
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str], int] = {}
        self.latency = Histogram(LATENCY_BUCKETS)
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.batch_seconds = Histogram(LATENCY_BUCKETS)
        self.in_flight = 0
        self.texts = 0

    def request_started(self) -> None:
        with self._lock:
            self.in_flight += 1

    def request_done(self, route: str, status: int, seconds: float) -> None:
        key = (route, str(status))
        with self._lock:
            self.in_flight -= 1
            self.requests[key] = self.requests.get(key, 0) + 1
            self.latency.observe(seconds, key)

    def batch_done(self, texts: int, seconds: float) -> None:
        with self._lock:
            self.batch_size.observe(texts)
            self.batch_seconds.observe(seconds)
            self.texts += texts

    def render(self) -> str:
        """The exposition text, one ``# HELP`` and ``# TYPE`` line per metric."""
        route = ("route", "status")
        with self._lock:
            blocks = [
                ("requests_total", "counter", "HTTP requests answered, by route and status.",
                 [f"pretune_serve_requests_total{_labels(route, k)} {v}" for k, v in sorted(self.requests.items())]),
                ("request_seconds", "histogram", "Seconds from a request's arrival to its answer.",
                 self.latency.lines("pretune_serve_request_seconds", route)),
                ("requests_in_flight", "gauge", "Requests being handled now.",
                 [f"pretune_serve_requests_in_flight {self.in_flight}"]),
                ("batch_size", "histogram", "Texts per model call (dynamic batching merges concurrent requests).",
                 self.batch_size.lines("pretune_serve_batch_size", ())),
                ("batch_seconds", "histogram", "Seconds of one model call, tokenizing and post-processing included.",
                 self.batch_seconds.lines("pretune_serve_batch_seconds", ())),
                ("queue_depth", "gauge", "Texts waiting for a batch.",
                 [f"pretune_serve_queue_depth {self.queue_depth()}"]),
                ("texts_total", "counter", "Texts predicted.", [f"pretune_serve_texts_total {self.texts}"]),
                ("model_info", "gauge", "The model served: its path, variant, format, task and runtime.",
                 [f"pretune_serve_model_info{_labels(tuple(self.info), tuple(self.info.values()))} 1"]),
            ]
        out = []
        for name, kind, help_, lines in blocks:
            out += [f"# HELP pretune_serve_{name} {help_}", f"# TYPE pretune_serve_{name} {kind}", *lines]
        return "\n".join(out) + "\n"
