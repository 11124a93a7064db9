"""Early stopping in a real search (issue 12): a trial the Pareto-aware scheduler stops ends PRUNED in
Optuna, with the rung it reached and its curve, never COMPLETE and never on the front; the scheduler's
state is stored with the study and a resumed search continues the same rungs."""

import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from nas.engine.driver import StudyDriver
from nas.engine.scheduler import ParetoASHA
from nas.engine.search import SearchConfig, SearchError, _scheduler
from nas.study import StudyMeta, create_or_load_study, pareto_front
from search_spaces import SearchSpace

SPACE = SearchSpace(attention=("mhsa",), embed_dim=(32, 64), depth=(1, 2), num_heads=(2,), patch_size=(4,),
                    stem=("patch",), pos_encoding=("none", "learned"))


def _epoch(epoch, acc, params, throughput):
    return {"epoch": epoch, "val_accuracy": acc, "train_loss": 1.0, "params": params, "throughput": throughput}


def test_a_stopped_trial_is_pruned_with_its_rung_and_curve_and_never_on_the_front():
    study = create_or_load_study(optuna.storages.InMemoryStorage(), "es", meta=StudyMeta(num_classes=10))
    scheduler = ParetoASHA(grace_period=1, eta=3, max_t=3)
    driver = StudyDriver(study, SPACE, 16, target=10, scheduler=scheduler)
    trials = {}
    for tid in ("a", "b", "c"):
        config = driver.suggest(tid)
        trials[tid] = SimpleNamespace(trial_id=tid, config=config)
    # Trial c is larger, slower and less accurate at the first rung than a and b: dominated, outside the top 1/3.
    first = {"a": _epoch(1, 0.80, 20_000, 5_000.0), "b": _epoch(1, 0.70, 10_000, 9_000.0),
             "c": _epoch(1, 0.30, 60_000, 2_000.0)}
    decisions = {tid: scheduler.on_trial_result(None, trials[tid], first[tid]) for tid in ("a", "b", "c")}
    assert decisions == {"a": "CONTINUE", "b": "CONTINUE", "c": "STOP"}
    driver.on_trial_complete("c", first["c"])  # what Ray hands a searcher for a stopped trial: its last result
    for tid, acc in (("a", 0.9), ("b", 0.85)):
        driver.on_trial_complete(tid, {"accuracy": acc, "params": first[tid]["params"],
                                       "throughput": first[tid]["throughput"], "epoch": 3, "curve": []})
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert len(pruned) == 1 and pruned[0].values is None
    attrs = pruned[0].user_attrs
    assert attrs["pruned_at_epoch"] == 1 and [c["epoch"] for c in attrs["curve"]] == [1]
    assert attrs["params"] == 60_000 and attrs["throughput"] == 2_000.0
    assert pruned[0].number not in {t.number for t in pareto_front(study)}
    assert driver.complete == 2 and driver.pruned == 1  # a pruned trial does not count towards the target
    # The state travels with the study; a resumed search's scheduler continues the same rungs.
    cfg = SearchConfig(epochs=3, grace_period=1, eta=3, scheduler="pareto")
    resumed = _scheduler(cfg, study)
    assert resumed.get_state() == scheduler.get_state()
    assert set(resumed.rung_entries(1)) == {"a", "b", "c"} and set(resumed.stopped) == {"c"}
    assert _scheduler(SearchConfig(epochs=3, grace_period=1, eta=2), study).rung_entries(1) == {}  # other rungs
    assert _scheduler(SearchConfig(epochs=1), study) is None  # nothing to stop with one epoch
    curve = _scheduler(SearchConfig(epochs=3, grace_period=1, eta=3, scheduler="curve"), study)
    assert curve.curve_aware and set(curve.stopped) == {"c"}  # the same rungs, the curve-aware rule
    assert not resumed.curve_aware


@pytest.mark.parametrize("order", [("a", "b", "c"), ("c", "b", "a"), ("b", "c", "a")])
def test_the_stored_objectives_reach_the_scheduler_from_every_epoch_report(order):
    """The trial measures params and throughput before training and reports them with each epoch, so the
    scheduler ranks with the real figures whatever the arrival order (the complete rung decides alike)."""
    scheduler = ParetoASHA(grace_period=1, eta=3, max_t=3)
    first = {"a": _epoch(1, 0.80, 20_000, 5_000.0), "b": _epoch(1, 0.70, 10_000, 9_000.0),
             "c": _epoch(1, 0.30, 60_000, 2_000.0)}
    for tid in order:
        scheduler.on_trial_result(None, SimpleNamespace(trial_id=tid, config={}), first[tid])
    assert scheduler.rung_entries(1)["c"] == {"accuracy": 0.30, "params": 60_000, "throughput": 2_000.0}
    assert scheduler.verdicts(1) == {"a": "CONTINUE", "b": "CONTINUE", "c": "STOP"}


@pytest.mark.slow
def test_search_with_a_pruned_trial_end_to_end(tmp_path, small_space):
    """Through Ray Tune: the scheduler's STOP ends the trial early and the driver records it PRUNED; the
    search still reaches its target of complete trials, and the CLI says what early stopping saved."""
    storage = f"sqlite:///{tmp_path / 's.db'}"
    # The fault (trial 1 stopped at its first rung whatever it ranks) is injected here, by monkeypatching the
    # search's scheduler factory in the CLI's process; nothing in the product knows about it.
    code = textwrap.dedent("""
        import sys
        from ray.tune.schedulers import TrialScheduler
        from nas.cli import main
        from nas.engine import scheduler as sch, search

        class StopTrialOne(sch.ParetoASHA):
            def on_trial_result(self, runner, trial, result):
                decision = super().on_trial_result(runner, trial, result)
                if trial.config.get("number") == 1 and result.get("epoch") == 1 and decision == TrialScheduler.CONTINUE:
                    sch.record_stop(self.stopped, self._curves, str(trial.trial_id), 1, 1)
                    return TrialScheduler.STOP
                return decision

        factory = search._scheduler
        def scheduler(config, study, meta, *rest):
            made = factory(config, study, meta, *rest)
            made.__class__ = StopTrialOne
            return made
        search._scheduler = scheduler
        main(sys.argv[1:])
    """)
    args = ["search", "--study", "es", "--trials", "2", "--epochs", "2", "--train-subset", "200", "--val-subset",
            "100", "--no-presets", "--sampler", "random", "--storage", storage, "--run-dir", str(tmp_path / "runs"),
            "--config", small_space, "--promote-at", "0"]  # small designs, no rung: the scheduler is under test
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200")
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    study = optuna.load_study(study_name="es", storage=storage)
    states = {t.number: t.state for t in study.trials}
    assert states[1] == TrialState.PRUNED and list(states.values()).count(TrialState.COMPLETE) == 2
    assert study.trials[1].user_attrs["pruned_at_epoch"] == 1
    assert 1 not in {t.number for t in pareto_front(study)}
    assert study.user_attrs["scheduler_state"]["stopped"]
    assert "trial   1 stopped early at epoch 1" in proc.stdout
    assert "early stopping: 1 trial(s) stopped at a rung (PRUNED, not on the front), saving 1 of" in proc.stdout


def test_the_asha_baseline_prunes_through_the_same_driver_and_is_not_restored():
    from nas.engine.scheduler import AccuracyASHA

    study = create_or_load_study(optuna.storages.InMemoryStorage(), "es-asha", meta=StudyMeta(num_classes=10))
    scheduler = _scheduler(SearchConfig(epochs=3, grace_period=1, eta=3, scheduler="asha"), study)
    assert isinstance(scheduler, AccuracyASHA)
    driver = StudyDriver(study, SPACE, 16, target=10, scheduler=scheduler)
    trials = {tid: SimpleNamespace(trial_id=tid, config=driver.suggest(tid)) for tid in ("a", "b")}
    assert scheduler.on_trial_result(None, trials["a"], _epoch(1, 0.8, 20_000, 5_000.0)) == "CONTINUE"
    assert scheduler.on_trial_result(None, trials["b"], _epoch(1, 0.3, 10_000, 9_000.0)) == "STOP"
    driver.on_trial_complete("b", _epoch(1, 0.3, 10_000, 9_000.0))
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert [t.user_attrs["pruned_at_epoch"] for t in pruned] == [1]
    assert study.user_attrs["scheduler_state"]["version"] == "asha"
    # A resumed search's Pareto scheduler does not read the baseline's state; a resumed baseline starts afresh.
    assert _scheduler(SearchConfig(epochs=3, grace_period=1, eta=3), study).rung_entries(1) == {}
    assert _scheduler(SearchConfig(epochs=3, grace_period=1, eta=3, scheduler="asha"), study).stopped == {}
    with pytest.raises(SearchError, match="^scheduler: unknown value 'hyperband'; allowed: pareto, curve, asha"):
        SearchConfig(scheduler="hyperband").validate()


def test_the_gp_sampler_proposes_valid_genes_after_its_start_up_trials():
    from nas.engine.settings import make_sampler

    study = create_or_load_study(optuna.storages.InMemoryStorage(), "gp", meta=StudyMeta(num_classes=10))
    study.sampler = make_sampler("gp", seed=0, trials=6)
    assert isinstance(study.sampler, optuna.samplers.GPSampler)
    driver = StudyDriver(study, SPACE, 16, target=5)
    for i in range(5):  # 2 start-up trials, then the Gaussian process proposes
        config = driver.suggest(f"t{i}")
        arch = config["arch"]
        assert SPACE.contains(__import__("search_spaces").Architecture.from_dict(arch))
        driver.on_trial_complete(f"t{i}", {"accuracy": 0.5 + arch["embed_dim"] / 1000, "params": 1e4 * arch["depth"],
                                           "throughput": 1e3 / arch["depth"]})
    assert driver.complete == 5 and all(t.state == TrialState.COMPLETE for t in study.trials)


def test_the_auto_sampler_is_gp_then_nsga2_past_its_handover(monkeypatch):
    """``auto``: GPSampler proposes while the study holds fewer complete trials than the hand-over, NSGA-II
    afterwards (it marks the trials it handles with their generation); the search's warm-start line counts
    the designs each proposed. (The default is ``knowncost`` with the curve-aware rule, chosen on the
    recorded table.)"""
    from nas.engine.settings import GP_HANDOVER, GPThenNSGAII, make_sampler

    assert (SearchConfig().sampler, SearchConfig().scheduler) == ("knowncost", "curve")
    default = make_sampler("auto", seed=0, trials=12)
    assert isinstance(default, GPThenNSGAII) and default.handover == GP_HANDOVER
    study = create_or_load_study(optuna.storages.InMemoryStorage(), "auto", meta=StudyMeta(num_classes=10))
    study.sampler = GPThenNSGAII(make_sampler("gp", 0, 8), make_sampler("nsga2", 0, 8), handover=4)
    driver = StudyDriver(study, SPACE, 16, target=7)
    for i in range(7):
        config = driver.suggest(f"t{i}")
        arch = config["arch"]
        assert SPACE.contains(__import__("search_spaces").Architecture.from_dict(arch))
        driver.on_trial_complete(f"t{i}", {"accuracy": 0.5 + arch["embed_dim"] / 1000, "params": 1e4 * arch["depth"],
                                           "throughput": 1e3 / arch["depth"]})
    generation = ["NSGAIISampler:generation" in t.system_attrs for t in study.trials]
    assert generation == [False] * 4 + [True] * 3
    assert study.sampler.handed_over and all(t.state == TrialState.COMPLETE for t in study.trials)

    import copy

    from rich.console import Console

    import nas.cli as cli

    trials = [copy.deepcopy(t) for t in study.trials]
    for t in trials[:2]:  # as if the first two had been paper presets
        t.user_attrs = {**t.user_attrs, "preset": "deit"}
    monkeypatch.setattr(cli, "console", Console(record=True, width=200))
    cli._warm_start_note(SimpleNamespace(get_trials=lambda deepcopy=False: trials), "auto")
    assert ("warm start: 2 paper preset(s), then 5 design(s) sampled by auto (GPSampler: 2, NSGA-II: 3)"
            in cli.console.export_text())
