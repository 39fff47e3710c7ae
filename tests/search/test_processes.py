"""Several processes: two workers on one storage (SQLite, PostgreSQL), SIGKILL and restart, torchrun ranks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from pretune.search import search
from pretune.search.factories import make_storage
from search.fakes import barrier_fit

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
LR = {"type": "float", "low": 1e-6, "high": 1e-2, "log": True}


def storages() -> list:
    params = [pytest.param("sqlite", id="sqlite")]
    params.append(pytest.param(os.environ.get("PRETUNE_TEST_POSTGRES_URL"), id="postgresql",
                               marks=pytest.mark.skipif(not os.environ.get("PRETUNE_TEST_POSTGRES_URL"),
                                                        reason="set PRETUNE_TEST_POSTGRES_URL (.ci/postgres.sh)")))
    return params


@pytest.mark.slow
@pytest.mark.parametrize("storage", storages())
def test_two_workers_share_one_study_without_collisions(tmp_path, storage, monkeypatch):
    monkeypatch.setenv("FAKE_BARRIER_DIR", str(tmp_path / "barrier"))  # both workers must be in a trial at once
    study_name = f"two-workers-{os.getpid()}-{time.time_ns()}"  # a shared server keeps old studies
    settings = {"space": {"train.lr": LR, "train.batch_size": [16, 32]}, "n_trials": 8, "workers": 2,
                "pruner": "none", "study": study_name}
    if storage != "sqlite":
        settings["storage"] = storage
    result = search({"output": str(tmp_path / "s"), "search": settings}, train_fn=barrier_fit)
    url = storage if storage != "sqlite" else f"sqlite:///{tmp_path / 's' / 'study.db'}"
    study = optuna.load_study(study_name=study_name, storage=make_storage(url, heartbeat=None))
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    # The budget holds across workers: at most one trial over (the other worker's in-flight trial).
    assert 8 <= len(trials) <= 9 and result.counts["done"] == len(trials)
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2, f"expected both workers to run trials, got {workers}"
    dirs = [t.user_attrs["dir"] for t in trials]
    assert len(set(dirs)) == len(dirs)


KILL_SCRIPT = """
import logging, sys
sys.path.insert(0, {tests!r})
from search.fakes import fake_fit
from pretune.search import search
logging.basicConfig(level=logging.INFO)
search({{"output": {out!r}, "search": {{"space": {{"train.lr": {lr!r}}}, "n_trials": 4, "heartbeat": 1,
        "pruner": "none", "seed": 0}}}}, train_fn=fake_fit)
"""


@pytest.mark.slow
def test_sigkill_mid_trial_then_restart_loses_and_double_counts_nothing(tmp_path):
    out = tmp_path / "s"
    script = tmp_path / "run_search.py"
    script.write_text(KILL_SCRIPT.format(tests=str(TESTS), out=str(out), lr=LR))
    hang = tmp_path / "hanging"
    env = {**os.environ, "FAKE_HANG_FILE": str(hang), "FAKE_HANG_TRIAL": "0002", "PYTHONPATH": str(REPO)}
    # fake_fit hangs in trial 2's second evaluation, the first time only.
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 90
    while not hang.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "the search never reached the hanging trial"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    url = f"sqlite:///{out / 'study.db'}"
    before = optuna.load_study(study_name="pretune", storage=url).get_trials()
    killed = [t for t in before if t.state == TrialState.RUNNING]
    assert [t.number for t in killed] == [2] and killed[0].intermediate_values  # reported once, then hung
    finished_before = {t.number: t.values for t in before if t.state == TrialState.COMPLETE}
    assert sorted(finished_before) == [0, 1]

    time.sleep(2.5)  # past the heartbeat grace period (2 x 1 s)
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]

    after = optuna.load_study(study_name="pretune", storage=url).get_trials()
    by_number = {t.number: t for t in after}
    assert by_number[killed[0].number].state == TrialState.FAIL
    retries = [t for t in after if t.system_attrs.get("failed_trial") == killed[0].number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed[0].params  # re-run with the same parameters
    for number, values in finished_before.items():
        assert by_number[number].values == values  # nothing finished was lost or changed
    complete = [t for t in after if t.state == TrialState.COMPLETE]
    assert len(complete) == 4  # n_trials=4 counted once each: the killed one is not counted
    rows = json.loads((out / "trials.json").read_text())
    assert rows[killed[0].number]["fail_reason"] == (f"worker died mid-trial (heartbeat stopped); re-run as trial "
                                                     f"{retries[0].number}")
    assert rows[retries[0].number]["retry_of"] == killed[0].number


WORKERS_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from search.fakes import fake_fit
from pretune.search import search
if __name__ == "__main__":  # the second worker is spawned: it re-imports this file
    search({{"output": {out!r}, "search": {{"space": {{"train.lr": {lr!r}}}, "n_trials": 4, "workers": 2,
            "pruner": "none"}}}}, train_fn=fake_fit)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_sigkill_of_a_multi_worker_search_takes_its_workers_with_it(tmp_path):
    script = tmp_path / "workers.py"
    script.write_text(WORKERS_SCRIPT.format(tests=str(TESTS), out=str(tmp_path / "s"), lr=LR))
    hung = tmp_path / "hung"
    hung.mkdir()
    env = {**os.environ, "FAKE_HANG_ALL_DIR": str(hung), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 90
    while len(list(hung.iterdir())) < 2:  # both workers are inside a trial
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        if time.time() > deadline:
            proc.kill()
            pytest.fail("the two workers never both started a trial")
        time.sleep(0.2)
    worker = next(int(p.name) for p in hung.iterdir() if int(p.name) != proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while _alive(worker) and time.time() < deadline:
        time.sleep(0.1)
    if _alive(worker):
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the spawned worker outlived the killed search")


TORCHRUN_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from search.fakes import record_params_fit
from pretune.search import search
search({{"output": {out!r}, "search": {{"space": {space!r}, "n_trials": 3, "sampler": "random",
        "pruner": "none", "heartbeat": 5}}}}, train_fn=record_params_fit)
"""


@pytest.mark.slow
def test_torchrun_ranks_train_identical_params(tmp_path):
    out = tmp_path / "s"
    script = tmp_path / "search_ddp.py"
    space = {"train.lr": LR, "train.batch_size": [8, 16, 32], "method.name": ["full", "lora"],
             "lora.r": {"choices": [4, 8, 16], "when": {"method.name": "lora"}}}
    script.write_text(TORCHRUN_SCRIPT.format(tests=str(TESTS), out=str(out), space=space))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    done = subprocess.run(cmd, env=env, capture_output=True, timeout=180)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    trial_dirs = sorted((out / "trials").iterdir())
    assert len(trial_dirs) == 3
    for d in trial_dirs:
        r0, r1 = (json.loads((d / f"rank{r}.json").read_text()) for r in (0, 1))
        assert r0["pid"] != r1["pid"]
        assert {k: v for k, v in r0.items() if k != "pid"} == {k: v for k, v in r1.items() if k != "pid"}
    # Independently seeded ranks would have drawn different values; rank 0's were used everywhere.
    assert len({json.loads((d / "rank0.json").read_text())["lr"] for d in trial_dirs}) == 3


@pytest.mark.slow
def test_torchrun_search_with_the_real_fit_trains_data_parallel_trials(base_config, tmp_path):
    import yaml

    base_config["search"] = {"space": {"train.lr": [1e-3, 3e-3]}, "sampler": "grid", "pruner": "none",
                             "n_trials": 2, "heartbeat": 5}
    out = base_config.pop("output")
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(base_config))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "pretune.cli", "search", "--config", str(path), "--output", out]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads((Path(out) / "trials.json").read_text())
    assert [r["state"] for r in rows] == ["complete", "complete"]
    for r in rows:
        assert r["train_samples"] == 64  # counted once, not once per rank
        fit = json.loads((Path(out) / "trials" / f"{r['number']:04d}" / "results.json").read_text())
        # Each of the 2 ranks ran half of the 4 micro-batches of 16 rows; the step counts the whole 64.
        assert fit["world_size"] == 2 and fit["steps"] == 2 and fit["train_samples"] == 64
