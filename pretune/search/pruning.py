"""Asynchronous successive halving on schedule fractions, every trial read at the same places.

Trials report each evaluation at its place in their own schedule (``runner.progress_step``), so rungs are
fractions of a schedule. Optuna's ``SuccessiveHalvingPruner`` files a trial's *current* value under every rung
it has passed since its last check. A trial first checked late (``search.prune_after``, or evaluations sparser
than the rungs) is then judged on a later evaluation than its peers were: 0.765 at 31% of one schedule against
0.66 at 47% of another. Here a trial's value at a rung is always its first evaluation at or past the rung, for
the trial being judged and for its peers alike, and a trial is judged only on the rungs its latest evaluation
crossed: rungs crossed while pruning was held off are not judged later with stale values.
"""

from __future__ import annotations

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

# Trials report at their place in the schedule in these parts (see runner.progress_step).
PROGRESS_STEPS = 10_000


def rungs(reduction_factor: int = 3, count: int = 4) -> list[int]:
    """Rung steps: 1/eta**count, ..., 1/eta of the schedule (1/81, 1/27, 1/9, 1/3 by default)."""
    return [round(PROGRESS_STEPS / reduction_factor ** k) for k in range(count, 0, -1)]


def value_at(trial: FrozenTrial, rung: int) -> tuple[int, float] | None:
    """The trial's first evaluation at or past ``rung`` as (step, value), or None if it has not got there."""
    steps = [s for s in trial.intermediate_values if s >= rung]
    if not steps:
        return None
    first = min(steps)
    return first, trial.intermediate_values[first]


class ScheduleHalvingPruner(optuna.pruners.BasePruner):
    """ASHA: at each rung a trial goes on only if it is in the top 1/``reduction_factor`` of the trials there.

    With fewer than ``reduction_factor`` trials at a rung, only the best goes on (as Optuna's, which cannot pause
    a trial to promote it later as the ASHA paper does).
    """

    def __init__(self, reduction_factor: int = 3, rung_count: int = 4):
        self.reduction_factor = reduction_factor
        self.rungs = rungs(reduction_factor, rung_count)

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        crossed = [r for r in self.rungs if (v := value_at(trial, r)) is not None and v[0] == step]
        if not crossed:
            return False
        peers = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
        maximize = study.direction == StudyDirection.MAXIMIZE
        for rung in crossed:
            mine = value_at(trial, rung)[1]
            values = [v[1] for t in peers if t.number != trial.number and (v := value_at(t, rung)) is not None]
            values = sorted([*values, mine], reverse=maximize)
            bar = values[max(1, len(values) // self.reduction_factor) - 1]
            if (mine < bar) if maximize else (mine > bar):
                return True
        return False
