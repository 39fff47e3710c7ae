"""ASHA on schedule fractions: every trial read at its first evaluation at or past a rung (and before the next
rung's place), judged once per rung."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from pretune.search.pruning import GracePeriod, ScheduleHalvingPruner, rungs


def study_with(peers: list[dict[int, float]], direction: str = "maximize", grace: GracePeriod = GracePeriod()
               ) -> optuna.Study:
    study = optuna.create_study(direction=direction, pruner=ScheduleHalvingPruner(grace=grace))
    for curve in peers:
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=curve[max(curve)], intermediate_values=curve))
    return study


def test_rungs_are_fractions_of_the_schedule():
    assert rungs() == [123, 370, 1111, 3333]  # 1/81, 1/27, 1/9, 1/3 of 10,000
    assert rungs(2, 2) == [2500, 5000]


def test_peers_are_read_at_their_first_evaluation_past_the_rung_not_their_latest():
    study = study_with([{200: 0.60, 1200: 0.70, 3400: 0.90}, {150: 0.55, 1150: 0.65, 3400: 0.88}])
    trial = study.ask()
    trial.report(0.62, 130)
    assert not trial.should_prune()  # rung 123: 0.62 against 0.60 and 0.55
    trial.report(0.75, 1111)
    assert not trial.should_prune()  # rung 1111: against 0.70 and 0.65 (at 1200, 1150), not 0.90
    trial.report(0.80, 3333)
    assert trial.should_prune()  # rung 3333: against 0.90 and 0.88; fewer than 3 others, only the best goes on


def test_a_trial_first_judged_after_the_grace_period_is_judged_on_every_rung_it_passed():
    """A 1-epoch trial with prune_after 0.5 passes every rung (up to 1/3) before it may be judged; at its first
    judged evaluation (71%) it is judged on the rung it reads at (1/3) with that evaluation's value, its earlier
    ones being noise."""
    study = study_with([{2381: 0.75, 4762: 0.78, 10000: 0.80}, {2381: 0.74, 4762: 0.77, 10000: 0.79}],
                       grace=GracePeriod(prune_after=0.5, epochs=1.0))
    bad, late = study.ask(), study.ask()
    for trial, early, now in ((bad, 0.51, 0.509), (late, 0.51, 0.785)):
        trial.report(early, 2381)
        assert not trial.should_prune()  # in its grace period, however bad
        trial.report(early, 4762)
        assert not trial.should_prune()
        trial.report(now, 7143)
    assert bad.should_prune()  # 0.509 against 0.75 / 0.78 at the rungs
    assert not late.should_prune()  # its own early 0.51 is not held against it: 0.785 now


def test_an_evaluation_past_the_next_rungs_place_is_no_reading_at_a_rung():
    """A 1-epoch peer whose 1/9 fell in its grace period, first evaluated at 34% of its schedule, has no value at
    1/9: held against a 2-epoch trial at 23%, its 0.76 would cut a trial still warming up."""
    study = study_with([{400: 0.80, 3438: 0.76, 10000: 0.77}, {400: 0.81, 3438: 0.75, 10000: 0.78}])
    trial = study.ask()
    trial.report(0.60, 2344)
    # Judged at rung 1111 only (2344 is past rung 370's window, which ends at 1110), and no peer read there.
    assert not trial.should_prune()
    trial.report(0.70, 3500)
    assert trial.should_prune()  # rung 3333: 0.70 against 0.76 and 0.75


def test_after_the_first_judgement_only_newly_crossed_rungs_are_judged():
    study = study_with([{200: 0.60, 400: 0.70}])
    trial = study.ask()
    trial.report(0.65, 200)
    assert not trial.should_prune()  # first judgement (no mark: its first report): rung 123, 0.65 against 0.60
    trial.report(0.55, 300)
    assert not trial.should_prune()  # no rung crossed at 300: a dip between rungs is not judged
    trial.report(0.72, 500)
    assert not trial.should_prune()  # rung 370 crossed: 0.72 against the peer's 0.70 there


@pytest.mark.parametrize("mine, pruned", [(0.20, False), (0.25, True)])
def test_top_third_goes_on_when_minimising(mine, pruned):
    study = study_with([{150: v} for v in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)], direction="minimize")
    trial = study.ask()
    trial.report(mine, 150)
    assert trial.should_prune() is pruned  # 7 at the rung: the best 2 (0.1, 0.2) go on


def test_the_grace_period_is_a_place_in_each_trials_own_schedule():
    """prune_after 1 epoch: a third of a 3-epoch schedule, all of a 1-epoch one; a trial's own sampled epochs count."""
    grace = GracePeriod(prune_after=1.0, epochs=3.0)
    study = optuna.create_study(direction="maximize", pruner=ScheduleHalvingPruner(grace=grace))
    study.ask()  # the config's 3 epochs
    study.enqueue_trial({"train.epochs": 1})
    study.ask({"train.epochs": optuna.distributions.CategoricalDistribution([1, 3])})  # a sampled 1 epoch
    assert [grace.first_step(t) for t in study.trials] == [3333, 10_000]
    assert GracePeriod(prune_after=1.0, epochs=None).fraction() == 0.0  # train.max_steps: unknown, none
    assert GracePeriod(prune_after=0.0, epochs=3.0).fraction() == 0.0


@pytest.mark.parametrize("name", ["asha", "hyperband", "median"])
def test_no_pruner_judges_a_trial_in_its_grace_period(name):
    from pretune.search.factories import make_pruner

    pruner = make_pruner(name, multi=False, grace=GracePeriod(prune_after=1.0, epochs=2.0))
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for _ in range(6):
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.9,
                                     intermediate_values={123: 0.9, 370: 0.9, 1111: 0.9, 3333: 0.9, 5000: 0.9}))
    trial = study.ask()
    for step in (123, 370, 1111, 3333):
        trial.report(0.1, step)
        assert not trial.should_prune(), step  # before half its schedule (1 of 2 epochs)
    trial.report(0.1, 5000)
    assert trial.should_prune() or name == "hyperband"  # Hyperband's bracket may read it at a later rung
