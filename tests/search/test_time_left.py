"""A search under a deadline starts a trial only if a trial of the usual length can finish before it."""

from __future__ import annotations

import datetime
import logging
import time
from types import SimpleNamespace

from optuna.trial import TrialState

from pretune.search.runner import time_for_another


def trial(seconds: float, state=TrialState.COMPLETE):
    start = datetime.datetime(2026, 1, 1, 12, 0, 0)
    return SimpleNamespace(state=state, datetime_start=start,
                           datetime_complete=start + datetime.timedelta(seconds=seconds))


def test_a_trial_starts_only_when_the_median_trial_fits_in_the_time_left(caplog):
    caplog.set_level(logging.INFO, logger="pretune.search")
    now = time.time()
    assert time_for_another([], now + 1)  # nothing measured yet: the first trial always starts
    assert time_for_another([trial(60), trial(50), trial(70)], None)  # no deadline
    assert time_for_another([trial(60), trial(50), trial(70)], now + 90)
    assert not time_for_another([trial(60), trial(50), trial(70)], now + 40)
    assert "a trial takes about 60 s and 40 s of the search's time are left" in caplog.text
    # pruned and failed trials are shorter or meaningless: only complete ones set the expected length
    assert time_for_another([trial(60), trial(5, TrialState.PRUNED), trial(1, TrialState.FAIL)], now + 70)
    assert not time_for_another([trial(60), trial(5, TrialState.PRUNED), trial(1, TrialState.FAIL)], now + 50)
