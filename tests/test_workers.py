"""``pretune.workers``: a job in a fresh process, its answer or its error (with its class) sent back."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pretune import errors, workers

ERRORS = [cls for cls in vars(errors).values()
          if isinstance(cls, type) and issubclass(cls, errors.PretuneError)]


def _answer_of(job_fn, monkeypatch) -> tuple[int, str]:
    monkeypatch.setattr(workers, "_function", lambda name: job_fn)
    return workers.serve("any", {})


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_every_pretune_error_crosses_the_process_boundary_with_its_class(cls, monkeypatch):
    def job(payload):
        raise cls("the message, with its fix")

    status, line = _answer_of(job, monkeypatch)
    assert status == 2
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 2, stdout=line, stderr=""))
    with pytest.raises(cls, match="the message, with its fix") as info:
        workers.call("any", {})
    assert type(info.value) is cls


def test_the_three_errors_a_trial_raises_are_in_the_family():
    for name in ("TrainingDiverged", "BudgetStop", "TrialOutOfMemory", "ResumeError"):
        assert issubclass(errors.by_name(name), errors.PretuneError) and errors.by_name(name).__name__ == name
    assert errors.by_name("KeyError") is errors.PretuneError  # never anything but the family


def test_a_bug_in_the_child_is_a_worker_failure_with_its_last_line(monkeypatch):
    def job(payload):
        raise KeyError("a bug")

    monkeypatch.setattr(workers, "_function", lambda name: job)
    with pytest.raises(KeyError):  # serve lets bugs through: the child then dies with a traceback
        workers.serve("any", {})
    crashed = subprocess.CompletedProcess([], 1, stdout="", stderr="Traceback ...\nKeyError: 'a bug'\n")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: crashed)
    with pytest.raises(errors.WorkerFailed, match="KeyError: 'a bug'"):
        workers.call("any", {}, what="the probe")


def test_a_real_worker_process_answers_and_reports_unknown_jobs():
    out = subprocess.run([sys.executable, "-m", "pretune.cli.worker", "no-such-job"], input="{}",
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert answer["type"] == "WorkerFailed" and "known: bench, estimate" in answer["error"]


def test_a_missing_extra_is_one_line_naming_it(monkeypatch):
    """A compress method that needs ONNX Runtime, where it is not installed, names the extra that brings it."""
    from pretune.compress.quantize import _need_onnx

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(errors.MissingExtra, match=r"compress method int8-dynamic-ort needs onnxruntime, which is "
                                                  r"not installed; pip install 'pretune\[onnx\]'"):
        _need_onnx("int8-dynamic-ort")
