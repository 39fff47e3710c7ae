"""Asynchronous successive halving on schedule fractions, every trial read at the same places.

Trials report each evaluation at its place in their own schedule (``runner.progress_step``), so rungs are
fractions of a schedule. A trial's value at a rung is its first evaluation at or past the rung and before the
next rung's place (rung x reduction factor); one past that reads another stage of training, and the trial
has no value at that rung. A trial is judged on the rungs its latest evaluation crossed, and at its first
judged evaluation (the first past its grace period, ``search.prune_after`` epochs) on every rung whose window
it falls in, with that evaluation's value: its earlier ones were held to be too early to judge. Optuna's
``SuccessiveHalvingPruner`` files a trial's current value under every rung passed since its last check, for
peers too, so a trial was compared with peers' later evaluations than its own at that rung (0.765 at 31% of
one schedule against values at 47% of others).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

# Trials report at their place in the schedule in these parts (see runner.progress_step).
PROGRESS_STEPS = 10_000


@dataclass(frozen=True)
class GracePeriod:
    """Epochs a trial trains before a pruner may stop it (``search.prune_after``), placed in each trial's schedule.

    A trial of E epochs may be judged from ``prune_after / E`` of its schedule: its epochs are its own
    ``train.epochs`` when the search samples them, else ``epochs``. With ``train.max_steps`` the epochs of a
    schedule depend on the data, unknown here: ``epochs`` is then None and the grace is counted from the start.
    """

    prune_after: float = 0.0
    epochs: Optional[float] = None  # the base config's train.epochs; None under train.max_steps

    def fraction(self, trial_epochs: Optional[float] = None) -> float:
        """The place in a schedule of ``trial_epochs`` (default ``epochs``) from which a trial may be judged."""
        total = trial_epochs or self.epochs
        if not self.prune_after or not total:
            return 0.0
        return min(1.0, self.prune_after / total)

    def first_step(self, trial: FrozenTrial) -> int:
        """The first reported step at which ``trial`` may be judged."""
        return round(PROGRESS_STEPS * self.fraction(trial.params.get("train.epochs")))

    def allows(self, trial: FrozenTrial) -> bool:
        """Whether ``trial``'s latest report is past its grace period."""
        return trial.last_step is not None and trial.last_step >= self.first_step(trial)


def rungs(reduction_factor: int = 3, count: int = 4) -> list[int]:
    """Rung steps: 1/eta**count, ..., 1/eta of the schedule (1/81, 1/27, 1/9, 1/3 by default)."""
    return [round(PROGRESS_STEPS / reduction_factor ** k) for k in range(count, 0, -1)]


def value_at(trial: FrozenTrial, rung: int, until: int) -> tuple[int, float] | None:
    """The trial's first evaluation at or past ``rung`` as (step, value); None if it has not got there, or if
    that evaluation is at or past ``until`` (the next rung's place).

    A 1-epoch trial whose rung at 1/9 fell in its grace period, first evaluated at 34% of its schedule, has no
    value at 1/9: read there, it held a 2-epoch trial's 0.51 at 23% against its own 0.76 at 34%.
    """
    steps = [s for s in trial.intermediate_values if s >= rung]
    if not steps or min(steps) >= until:
        return None
    first = min(steps)
    return first, trial.intermediate_values[first]


class ScheduleHalvingPruner(optuna.pruners.BasePruner):
    """ASHA: at each rung a trial goes on only if it is in the top 1/``reduction_factor`` of the trials there.

    With fewer than ``reduction_factor`` trials at a rung, only the best goes on (as Optuna's, which cannot pause
    a trial to promote it later as the ASHA paper does).
    """

    def __init__(self, reduction_factor: int = 3, rung_count: int = 4, grace: GracePeriod = GracePeriod()):
        self.reduction_factor = reduction_factor
        self.rungs = rungs(reduction_factor, rung_count)
        self.grace = grace

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        if not self.grace.allows(trial):
            return False
        step = trial.last_step
        mine = trial.intermediate_values[step]
        eta = self.reduction_factor
        first = self.grace.first_step(trial)
        if step == min(s for s in trial.intermediate_values if s >= first):  # its first judged evaluation
            judged = [r for r in self.rungs if r <= step < r * eta]  # first judgement: the rungs it reads at
        else:
            judged = [r for r in self.rungs if (v := value_at(trial, r, r * eta)) is not None and v[0] == step]
        if not judged:
            return False
        peers = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
        maximize = study.direction == StudyDirection.MAXIMIZE
        for rung in judged:
            values = [v[1] for t in peers if t.number != trial.number
                      and (v := value_at(t, rung, rung * eta)) is not None]
            values = sorted([*values, mine], reverse=maximize)
            bar = values[max(1, len(values) // eta) - 1]
            if (mine < bar) if maximize else (mine > bar):
                return True
        return False


class GraceMedianPruner(optuna.pruners.MedianPruner):
    """Optuna's median pruner, judging a trial only past its grace period."""

    def __init__(self, grace: GracePeriod = GracePeriod(), **kwargs):
        super().__init__(**kwargs)
        self.grace = grace

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return self.grace.allows(trial) and super().prune(study, trial)


class GraceHyperbandPruner(optuna.pruners.HyperbandPruner):
    """Optuna's Hyperband, judging a trial only past its grace period (a subclass, so that TPE still samples
    within each bracket as it does for Hyperband)."""

    def __init__(self, grace: GracePeriod = GracePeriod(), **kwargs):
        super().__init__(**kwargs)
        self.grace = grace

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return self.grace.allows(trial) and super().prune(study, trial)
