"""Promotion at one rung in a real search (issue 25, the default chosen on the recorded table): until
``promote_at`` of the epoch budget is spent, trials train half their epochs and pause (COMPLETE with the
rung's accuracy, ``paused_at``, the paused run's state on disk); then the paused trials' first
``promote_fronts`` non-dominated fronts resume, most accurate first, and each resumed run is the
uninterrupted run, epoch for epoch (the search through Ray: tests/test_ray_boundary.py)."""

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas import objectives
from nas.engine.driver import StudyDriver
from nas.engine.search import SearchConfig, SearchError
from nas.study import StudyMeta, create_or_load_study, pareto_front, study_status, superseded, trained_epochs
from search_spaces import SearchSpace

SPACE = SearchSpace(attention=("mhsa",), embed_dim=(32, 64), depth=(1, 2), num_heads=(2,), patch_size=(4,),
                    stem=("patch",), pos_encoding=("none", "learned"))


def _paused(acc, params, throughput, path):
    return {"accuracy": acc, "params": params, "throughput": throughput, "epoch": 1, "paused_at": 1,
            "paused_state": path, "paused_state_artifact": {"store": "/s", "id": Path(path).stem},
            "curve": [{"epoch": 1, "val_accuracy": acc, "train_loss": 1.0}]}


def test_the_driver_pauses_until_the_rung_budget_then_resumes_the_front_most_accurate_first(tmp_path):
    study = create_or_load_study(optuna.storages.InMemoryStorage(), "p", meta=StudyMeta(num_classes=10))
    driver = StudyDriver(study, SPACE, 16, target=2, rung=1, promote_after=3)
    results = [(0.6, 2e4, 500.0), (0.5, 1e4, 1000.0), (0.4, 3e4, 400.0)]  # the third is dominated by the first
    for i, (acc, params, tput) in enumerate(results):
        assert driver.remaining() > 0 and not driver.promote_due()
        config = driver.suggest(f"t{i}")
        assert config["pause_at"] == 1 and "resume" not in config
        driver.on_trial_complete(f"t{i}", _paused(acc, params, tput, str(tmp_path / f"{i}.paused.pt")))
    # paused trials are neither complete nor results to reuse; their epochs count
    assert (driver.complete, driver.paused, driver.epochs_trained, driver.trained) == (0, 3, 3, {})
    assert driver.promote_due() and driver.remaining() == 0
    assert [t.number for t in pareto_front(study)] == [0, 1]  # before the promotion the rung's results are the front
    status = study_status(study)  # paused, not complete, and still the front
    assert (status["complete"], status["paused"], status["promoted"], status["front_size"]) == (0, 3, False, 2)

    assert driver.promote(fronts=1) == [0, 1] and not driver.promote_due()
    record = study.user_attrs["promotion"]
    assert (record["paused"], record["promoted"], record["rung"]) == ([0, 1, 2], [0, 1], 1)
    losses = [objectives.loss_vector(v) for v in results]
    assert set(record["promoted"]) == {int(j) for j in objectives.nondominated_sort(losses)[0]}
    assert superseded(study) == {0, 1, 2} and pareto_front(study) == []

    config = driver.suggest("r0")  # the enqueued resume of the most accurate, with its state file
    assert config["resume"] == str(tmp_path / "0.paused.pt") and "pause_at" not in config
    assert config["resume_artifact"] == {"store": "/s", "id": "0.paused"}  # for a worker without the run folder
    assert config["arch"] == study.trials[0].user_attrs["arch"]
    curve = [{"epoch": 1, "val_accuracy": 0.6, "train_loss": 1.0}, {"epoch": 2, "val_accuracy": 0.7, "train_loss": 0.5}]
    driver.on_trial_complete("r0", {"accuracy": 0.7, "params": 2e4, "throughput": 500.0, "epoch": 2, "curve": curve})
    resumed = study.trials[config["number"]]
    assert resumed.state == TrialState.COMPLETE and resumed.user_attrs["resumed_from"] == {"trial": 0, "epoch": 1}
    assert trained_epochs(resumed.state, resumed.user_attrs) == 1  # only the epochs after the rung
    assert (driver.complete, driver.epochs_trained) == (1, 4)
    assert [t.number for t in pareto_front(study)] == [config["number"]]
    status = study_status(study)
    assert (status["complete"], status["paused"], status["promoted"], status["front_size"]) == (1, 3, True, 1)

    second = driver.suggest("r1")  # the second resume is stopped without a result (the search ended)
    assert second["resume"] == str(tmp_path / "1.paused.pt")
    driver.on_trial_complete("r1", None)
    assert study.trials[second["number"]].state == TrialState.FAIL

    # a continued search: no pausing once promoted, the same promotion finished (the stopped resume queued
    # again, the finished one not)
    again = StudyDriver(study, SPACE, 16, target=2, rung=1, promote_after=3)
    assert again.rung is None and not again.promote_due() and again.promotion == record
    assert again.promote(fronts=1) == [1] and again.promote(fronts=1) == []
    assert again.suggest("r2")["resume"] == str(tmp_path / "1.paused.pt")


def test_after_the_front_resumes_the_gate_resumes_the_paused_trials_not_surely_dominated(tmp_path):
    study = create_or_load_study(optuna.storages.InMemoryStorage(), "g", meta=StudyMeta(num_classes=10))
    driver = StudyDriver(study, SPACE, 16, target=20, rung=1, promote_after=7)
    front = [(0.60, 2e4, 500.0), (0.55, 1.5e4, 600.0), (0.50, 1e4, 700.0), (0.45, 8e3, 800.0), (0.40, 6e3, 900.0)]
    # 5: dominated at the rung, and by far after it; 6: dominated at the rung by trial 4 only
    others = [(0.30, 3e4, 400.0), (0.30, 7e3, 850.0)]
    for i, (acc, params, tput) in enumerate(front + others):
        driver.suggest(f"t{i}")
        driver.on_trial_complete(f"t{i}", _paused(acc, params, tput, str(tmp_path / f"{i}.paused.pt")))
    assert driver.promote(fronts=1, gate=0.999) == [0, 1, 2, 3, 4]
    record = study.user_attrs["promotion"]
    assert (record["promoted"], record["pending"], record["gate"]) == ([0, 1, 2, 3, 4], [5, 6], 0.999)
    gains = [0.10, 0.11, 0.09, 0.10, 0.10]
    for k in range(5):  # only the front's resumes run until the gate has decided: no new proposal
        assert driver.gate_waiting() and driver.remaining() == 5 - k and not driver.gate_due()
        config = driver.suggest(f"r{k}")
        acc, params, tput = front[k]
        assert config["resume"] == str(tmp_path / f"{k}.paused.pt")
        final = acc + gains[k]
        driver.on_trial_complete(f"r{k}", {"accuracy": final, "params": params, "throughput": tput, "epoch": 2,
                                           "curve": [{"epoch": 1, "val_accuracy": acc}, {"epoch": 2, "val_accuracy": final}]})
    assert driver.gate_due() and driver.remaining() == 0
    # trial 5's optimistic prediction (the line through the five (rung, final) pairs, its 0.999 quantile) is
    # below trial 0's final with fewer params and more throughput; trial 6 has fewer params than any but trial 4,
    # whose final (0.50) is below trial 6's optimistic prediction
    from nas.engine.scheduler import dominated_by, predict_final

    pairs = [(a, a + g) for (a, _, _), g in zip(front, gains)]
    mean5, up5 = predict_final(pairs, 0.30, 0.999)
    assert mean5 == pytest.approx(0.40, abs=0.01) and 0.5 < up5 < 0.7
    assert dominated_by([up5, 3e4, 400.0], [[0.70, 2e4, 500.0]]) and not dominated_by([up5, 7e3, 850.0],
                                                                                        [[0.50, 6e3, 900.0]])
    assert driver.gate() == [6]
    record = study.user_attrs["promotion"]
    assert (record["gated"], record["gated_out"], record["promoted"]) == ([6], [5], [0, 1, 2, 3, 4, 6])
    assert not driver.gate_waiting() and driver.remaining() > 0
    assert driver.suggest("r5")["resume"] == str(tmp_path / "6.paused.pt")
    # a continued search decides nothing again: the stored decision stands
    again = StudyDriver(study, SPACE, 16, target=20, rung=1, promote_after=7)
    assert not again.gate_waiting() and again.promote(fronts=1, gate=0.999) == [] and again.gate() == []
    # without enough resumed curves to fit the line, every pending trial resumes
    assert predict_final(pairs[:3], 0.30, 0.999) is None
    with pytest.raises(ValueError, match=r"^quantile: must be in \(0.5, 1\)"):
        predict_final(pairs, 0.3, 1.0)


def test_a_study_trained_without_promotion_goes_on_without_one():
    study = create_or_load_study(optuna.storages.InMemoryStorage(), "old", meta=StudyMeta(num_classes=10))
    driver = StudyDriver(study, SPACE, 16, target=3)
    config = driver.suggest("t0")
    driver.on_trial_complete("t0", {"accuracy": 0.5, "params": 1e4, "throughput": 1e3, "epoch": 2,
                                    "curve": [{"epoch": 1}, {"epoch": 2}]})
    assert "pause_at" not in config
    again = StudyDriver(study, SPACE, 16, target=3, rung=1, promote_after=3)
    assert again.rung is None and "pause_at" not in again.suggest("t1")


def test_promotion_settings_and_their_errors():
    default = SearchConfig()
    assert (default.promote_at, default.promote_fronts, default.promote_gate, default.rung_epochs) == (0.33, 1, 0.999, 3)
    assert SearchConfig(epochs=1).rung_epochs is None and SearchConfig(promote_at=0).promote_after is None
    assert SearchConfig(epoch_budget=160).promote_after == pytest.approx(52.8)  # a third (0.33) of the epoch budget
    assert SearchConfig(trials=10).promote_after == pytest.approx(0.33 * 10 * 6)  # ... else of trials x epochs
    for bad in (1.0, -0.1, float("nan"), "x"):
        with pytest.raises(SearchError, match=r"^promote_at: must be a fraction in \[0, 1\)"):
            SearchConfig(promote_at=bad).validate()
    with pytest.raises(SearchError, match="^promote_fronts: must be an integer >= 1"):
        SearchConfig(promote_fronts=0).validate()
    SearchConfig(promote_gate=0).validate()
    for bad in (0.5, 1.0, -1, float("nan"), "x"):
        with pytest.raises(SearchError, match=r"^promote_gate: must be 0 \(no gate\) or a quantile in \(0.5, 1\)"):
            SearchConfig(promote_gate=bad).validate()


def test_a_worker_without_the_run_folder_resumes_from_the_artifact_store(tmp_path, digits):
    import shutil

    from nas.engine.trial import run_trial

    settings = {**SearchConfig(epochs=2, throughput_cache=False).worker_settings(), "run_dir": str(tmp_path / "run"),
                "artifact_store": str(tmp_path / "store")}
    arch = {"attention": "fnet", "embed_dim": 32, "depth": 1, "num_heads": 2, "patch_size": 4}
    whole = run_trial({"arch": arch, "number": 0, "known": None}, settings, lambda r: None, digits)
    paused = run_trial({"arch": arch, "number": 1, "known": None, "pause_at": 1}, settings, lambda r: None, digits)
    assert paused["paused_at"] == 1 and Path(paused["paused_state"]).is_file() and paused["paused_state_artifact"]
    shutil.rmtree(tmp_path / "run")  # another machine: the run folder is not there
    elsewhere = {**settings, "run_dir": str(tmp_path / "other")}
    config = {"arch": arch, "number": 2, "known": None, "resume": paused["paused_state"]}
    failed = run_trial(config, elsewhere, lambda r: None, digits)
    assert failed["fail_reason"].startswith(f"FileNotFoundError: resume: the paused state {paused['paused_state']} "
                                            "is not on this machine")
    resumed = run_trial({**config, "resume_artifact": paused["paused_state_artifact"]}, elsewhere, lambda r: None,
                        digits)
    assert [r["val_accuracy"] for r in resumed["curve"]] == [r["val_accuracy"] for r in whole["curve"]]
    assert resumed["accuracy"] == whole["accuracy"] and len(resumed["curve"]) == 2
