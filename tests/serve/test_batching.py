"""The dynamic batcher on its own (no model, no server): what it merges, splits, skips and isolates."""

from __future__ import annotations

import asyncio
import threading

import pytest

from pretune.serve.batching import Batcher, BatcherClosed
from pretune.serve.metrics import ServeMetrics


class Model:
    """Records each call's payloads and the thread it ran in; a payload "boom" raises."""

    def __init__(self, delay: float = 0.0):
        self.calls: list[list] = []
        self.threads: set[str] = set()
        self.delay = delay

    def __call__(self, payloads: list) -> list:
        import time

        self.calls.append(list(payloads))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if "boom" in payloads:
            raise ValueError("boom")
        return [f"row of {p}" for p in payloads]


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_are_merged_and_each_gets_its_own_rows():
    model = Model()

    async def main():
        b = Batcher(model, max_batch_size=32, max_wait_s=0.05)
        b.start()
        answers = await asyncio.gather(*(b.submit([f"{i}a", f"{i}b"], [3, 3]) for i in range(5)))
        await b.close()
        return answers

    answers = run(main())
    assert answers == [[f"row of {i}a", f"row of {i}b"] for i in range(5)]
    assert len(model.calls) == 1 and len(model.calls[0]) == 10  # one model call for the five requests
    assert model.threads and not model.threads & {threading.current_thread().name}  # not on the event loop


def test_a_full_window_is_sorted_by_length_and_cut_at_max_batch_size():
    model = Model()
    lengths = [1, 90, 2, 80, 3, 70, 4, 60]

    async def main():
        b = Batcher(model, max_batch_size=4, max_wait_s=0.05)
        b.start()
        rows = await b.submit([f"t{n}" for n in lengths], lengths)
        await b.close()
        return rows

    assert run(main()) == [f"row of t{n}" for n in lengths]  # back in the request's order
    assert model.calls == [["t1", "t2", "t3", "t4"], ["t60", "t70", "t80", "t90"]]  # short with short


def test_a_lone_request_runs_at_once_and_waits_only_for_requests_on_their_way():
    model = Model()

    async def main():
        b = Batcher(model, max_batch_size=8, max_wait_s=0.2)
        b.start()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await b.submit(["alone"], [1])  # nobody else is coming: no waiting for company
        alone = loop.time() - t0
        with b.on_the_way():  # a request is being read: the waiting text waits for it, up to max_wait
            t0 = loop.time()
            await b.submit(["held"], [1])
            held = loop.time() - t0

        async def coming():
            with b.on_the_way():
                await asyncio.sleep(0.05)
            return await b.submit(["second"], [1])

        t0 = loop.time()
        await asyncio.gather(b.submit(["first"], [1]), coming())  # the one on its way arrives: one call
        joined = loop.time() - t0
        with b.on_the_way():
            t0 = loop.time()
            await b.submit([f"y{i}" for i in range(8)], [1] * 8)  # a full batch goes at once
            full = loop.time() - t0
        await b.close()
        return alone, held, joined, full

    alone, held, joined, full = run(main())
    assert alone < 0.1 and 0.19 <= held < 1.0 and 0.04 <= joined < 0.15 and full < 0.15
    assert model.calls[:3] == [["alone"], ["held"], ["first", "second"]]


def test_a_cancelled_request_is_skipped_and_the_others_still_get_their_rows():
    model = Model()

    async def main():
        b = Batcher(model, max_batch_size=32, max_wait_s=0.1)
        b.start()
        with b.on_the_way():  # a third request on its way holds the batch
            gone = asyncio.ensure_future(b.submit(["left"], [1]))
            stays = asyncio.ensure_future(b.submit(["stays"], [1]))
            await asyncio.sleep(0.01)
            gone.cancel()  # its client went away while it waited for the batch
        rows = await stays
        await b.close()
        return rows

    assert run(main()) == ["row of stays"]
    assert model.calls == [["stays"]]


def test_a_failing_request_fails_alone():
    model = Model()

    async def main():
        b = Batcher(model, max_batch_size=32, max_wait_s=0.05)
        b.start()
        results = await asyncio.gather(b.submit(["fine"], [1]), b.submit(["boom", "x"], [1, 1]),
                                       b.submit(["also fine"], [1]), return_exceptions=True)
        after = await b.submit(["later"], [1])
        await b.close()
        return results, after

    (fine, failed, also), after = run(main())
    assert fine == ["row of fine"] and also == ["row of also fine"] and after == ["row of later"]
    assert isinstance(failed, ValueError)


def test_close_runs_the_waiting_texts_at_once_then_refuses_new_ones():
    model = Model()

    async def main():
        b = Batcher(model, max_batch_size=32, max_wait_s=30)  # nobody would wait this long
        b.start()
        waiting = asyncio.ensure_future(b.submit(["a", "b"], [1, 1]))
        await asyncio.sleep(0.01)
        await asyncio.wait_for(b.close(), 5)
        with pytest.raises(BatcherClosed):
            await b.submit(["c"], [1])
        return await waiting

    assert run(main()) == ["row of a", "row of b"]


def test_metrics_render_prometheus_text():
    m = ServeMetrics({"model": 'runs/"x"\\y', "variant": "onnx"}, lambda: 3)
    m.request_started()
    m.request_done("/predict", 200, 0.003)
    m.request_started()
    m.batch_done(5, 0.01)
    m.batch_done(1, 0.02)
    text = m.render()
    assert 'pretune_serve_requests_total{route="/predict",status="200"} 1' in text
    assert 'pretune_serve_request_seconds_bucket{route="/predict",status="200",le="0.0025"} 0' in text
    assert 'pretune_serve_request_seconds_bucket{route="/predict",status="200",le="0.005"} 1' in text
    assert 'pretune_serve_batch_size_bucket{le="4"} 1' in text and 'pretune_serve_batch_size_bucket{le="8"} 2' in text
    assert 'pretune_serve_batch_size_bucket{le="+Inf"} 2' in text and "pretune_serve_batch_size_sum 6" in text
    assert "pretune_serve_queue_depth 3" in text and "pretune_serve_requests_in_flight 1" in text
    assert 'pretune_serve_model_info{model="runs/\\"x\\"\\\\y",variant="onnx"} 1' in text
    assert text.count("# TYPE") == 8 and text.endswith("\n")


def test_a_full_queue_refuses_new_texts_and_takes_them_again_once_it_drains():
    from pretune.serve.batching import BatcherFull

    model = Model()

    async def main():
        b = Batcher(model, max_batch_size=4, max_wait_s=0.05, max_queue=5)
        b.start()
        first = asyncio.ensure_future(b.submit(["a", "b", "c"], [1, 1, 1]))
        await asyncio.sleep(0)  # it is queued
        with pytest.raises(BatcherFull, match="3 texts wait already"):
            await b.submit(["d", "e", "f"], [1, 1, 1])
        rows = await first
        later = await b.submit(["d", "e", "f"], [1, 1, 1])
        await b.close()
        return rows, later

    assert run(main()) == (["row of a", "row of b", "row of c"], ["row of d", "row of e", "row of f"])


def test_a_lone_short_call_runs_on_the_event_loop_and_a_long_or_shared_one_in_the_model_thread():
    """The hop to the model thread and back costs about half a millisecond on a busy CPU: a lone text whose last
    lone call was short runs on the loop's own thread; a slow model, or a text with others waiting, does not."""
    quick, slow = Model(), Model(delay=0.02)

    async def main(model, inline_s):
        b = Batcher(model, max_batch_size=8, max_wait_s=0.05, inline_s=inline_s)
        b.start()
        loop_thread = threading.current_thread().name
        placed = []
        for i in range(3):  # the first lone call is timed in the model thread; the next ones follow its time
            model.threads.clear()
            assert await b.submit([f"alone {i}"], [1]) == [f"row of alone {i}"]
            placed.append(loop_thread in model.threads)
        model.threads.clear()
        await asyncio.gather(*(b.submit([f"x{i}"], [1]) for i in range(3)))  # three waiting: not on the loop
        placed.append(loop_thread in model.threads)
        await b.close()
        return placed, b.inline_calls

    assert run(main(quick, 0.01)) == ([False, True, True, False], 2)
    assert run(main(slow, 0.01)) == ([False, False, False, False], 0)  # 20 ms calls would hold the loop
    assert run(main(Model(), 0.0)) == ([False, False, False, False], 0)  # turned off
