"""The driver is the only writer of the study: reuse, refusals and results decided and stored by it, with
no Ray and no worker in the loop (the worker's side is a plain dict in, a plain dict out)."""

import pytest
from optuna.trial import TrialState

from nas.engine.driver import STOPPED, StudyDriver
from nas.study import OBJECTIVES, create_or_load_study, open_storage
from search_spaces import Architecture, SearchSpace

# One architecture only: every proposal is the same genes.
ONE = SearchSpace(attention=("fnet",), embed_dim=(32,), depth=(1,), num_heads=(2,), patch_size=(4,),
                  mlp_ratio=(2.0,), pos_encoding=("none",), stem=("patch",))


@pytest.fixture
def study(tmp_path):
    return create_or_load_study(open_storage(f"sqlite:///{tmp_path / 'd.db'}"), "d")


def _result(acc=0.5, params=1000, thr=200.0):
    return {"accuracy": acc, "params": params, "throughput": thr, "flops": 123, "curve": [{"epoch": 1}],
            "weights": "/w.safetensors", "device": "cpu"}


def test_a_trained_result_is_stored_and_identical_genes_reuse_it(study):
    driver = StudyDriver(study, ONE, img_size=16, target=3)
    first = driver.suggest("a")
    assert first["known"] is None and first["number"] == 0 and first["arch"]["attention"] == "fnet"
    driver.on_trial_complete("a", _result())
    second = driver.suggest("b")
    assert second["known"]["reused_from"] == 0 and second["known"]["accuracy"] == 0.5
    driver.on_trial_complete("b", second["known"])  # what a worker reports back for a known result
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[0].values == trials[1].values == [0.5, 1000.0, 200.0]
    assert trials[0].user_attrs["flops"] == 123 and trials[0].user_attrs["arch"]["attention"] == "fnet"
    assert trials[1].user_attrs["reused_from"] == 0 and trials[1].user_attrs["weights"] == "/w.safetensors"
    assert driver.complete == 2


def test_genes_that_failed_twice_are_refused_with_the_last_reason(study):
    driver = StudyDriver(study, ONE, img_size=16, target=1, max_failures_per_arch=2)
    for tid in ("a", "b"):
        assert driver.suggest(tid)["known"] is None
        driver.on_trial_complete(tid, {"fail_reason": "RuntimeError: boom", "traceback": "tb"})
    refused = driver.suggest("c")["known"]
    assert refused["fail_reason"].startswith("RepeatedFailure: these genes failed 2 times (last: trial 1")
    driver.on_trial_complete("c", refused)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] * 3
    assert trials[0].user_attrs["fail_reason"] == "RuntimeError: boom" and trials[0].user_attrs["traceback"] == "tb"
    # A driver started later on the same study knows the failures without rescanning anything else.
    assert StudyDriver(study, ONE, img_size=16, target=1).suggest("d")["known"]["fail_reason"].startswith(
        "RepeatedFailure")


def test_interrupted_and_stopped_trials_do_not_count_as_failures_of_the_genes(study):
    driver = StudyDriver(study, ONE, img_size=16, target=1, max_failures_per_arch=1)
    driver.suggest("a")
    driver.on_trial_complete("a", {"epoch": 1, "val_accuracy": 0.3})  # ended without a final result
    driver.suggest("b")
    assert driver.stop_all() == [1]
    assert [t.user_attrs["fail_reason"] for t in study.get_trials()] == [STOPPED, STOPPED]
    assert driver.suggest("c")["known"] is None


def test_finished_once_the_target_is_reached_and_presets_come_first(study):
    space = SearchSpace()
    from search_spaces.presets import PRESETS

    study.enqueue_trial(space.to_params(PRESETS["qna"]), user_attrs={"preset": "qna"})
    driver = StudyDriver(study, space, img_size=16, target=1)
    config = driver.suggest("a")
    assert config["arch"] == PRESETS["qna"].to_dict()
    assert study.get_trials()[0].user_attrs["preset"] == "qna"
    driver.on_trial_complete("a", _result())
    assert driver.suggest("b") == "FINISHED"
    assert study.get_trials(states=(TrialState.COMPLETE,))[0].values == [_result()[k] for k in OBJECTIVES]


def test_a_study_continued_by_a_new_driver_counts_what_is_there(study):
    driver = StudyDriver(study, ONE, img_size=16, target=5)
    driver.suggest("a")
    driver.on_trial_complete("a", _result())
    again = StudyDriver(study, ONE, img_size=16, target=5)
    assert again.complete == 1 and again.suggest("x")["known"]["reused_from"] == 0


def test_presets_are_a_warm_start_the_sampler_proposes_as_many_designs(study):
    """With two presets enqueued and a target of one complete trial, the search goes on until the sampler's
    own proposals (complete or pruned) are as many as the presets; failures do not count."""
    space = SearchSpace(attention=("fnet", "mhsa"), embed_dim=(32, 48), depth=(1, 2), num_heads=(2,),
                        patch_size=(4,), mlp_ratio=(2.0,), pos_encoding=("none",), stem=("patch",))
    for i, dim in enumerate((32, 48)):
        arch = Architecture(attention="fnet", embed_dim=dim, depth=1, num_heads=2, patch_size=4, mlp_ratio=2.0,
                            pos_encoding="none", stem="patch")
        study.enqueue_trial(space.to_params(arch), user_attrs={"preset": f"p{i}"})
    driver = StudyDriver(study, space, img_size=16, target=1, min_sampled=2)
    assert driver.remaining() == 2
    for tid in ("p0", "p1"):  # the presets come first and complete: the target is met, the floor is not
        config = driver.suggest(tid)
        assert study.trials[config["number"]].user_attrs["preset"] == f"p{config['number']}"
        driver.on_trial_complete(tid, _result(acc=0.4 + config["number"] / 10))
    assert driver.complete == 2 and driver.sampled == 0 and driver.remaining() == 2
    failing = driver.suggest("f")
    driver.on_trial_complete("f", {"fail_reason": "RuntimeError: boom"})
    assert driver.remaining() == 2  # a failed proposal is not a sampled design
    for tid in ("s0", "s1"):
        config = driver.suggest(tid)
        assert config != "FINISHED" and "preset" not in study.trials[config["number"]].user_attrs
        driver.on_trial_complete(tid, _result(acc=0.3))
    assert driver.sampled == 2 and driver.remaining() == 0 and driver.suggest("late") == "FINISHED"
    assert failing["number"] == 2
    # A driver opened on the same study (a resumed search) counts the same.
    again = StudyDriver(study, space, img_size=16, target=1, min_sampled=2)
    assert (again.complete, again.sampled, again.remaining()) == (4, 2, 0)


def test_an_epoch_budget_ends_the_search_whatever_the_target(study):
    space = SearchSpace(attention=("fnet",), embed_dim=(32, 48), depth=(1, 2, 3), num_heads=(2,), patch_size=(4,),
                        mlp_ratio=(2.0,), pos_encoding=("none",), stem=("patch",))
    driver = StudyDriver(study, space, img_size=16, target=100, epoch_budget=7)
    curve3 = [{"epoch": e, "val_accuracy": 0.5} for e in (1, 2, 3)]
    first = driver.suggest("a")
    driver.on_trial_complete("a", {**_result(), "curve": curve3})
    assert driver.epochs_trained == 3 and driver.remaining() == 99
    second = driver.suggest("b")
    if second["known"]:  # the same genes again: a reused result trains nothing and costs no epoch
        driver.on_trial_complete("b", second["known"])
        assert driver.epochs_trained == 3
        second = driver.suggest("b2")
        driver.on_trial_complete("b2", {**_result(), "curve": curve3})
    else:
        driver.on_trial_complete("b", {**_result(), "curve": curve3})
    assert driver.epochs_trained == 6 and driver.remaining() > 0
    driver.suggest("c")
    driver.on_trial_complete("c", {**_result(), "curve": curve3})
    assert driver.epochs_trained == 9 and driver.remaining() == 0 and driver.suggest("d") == "FINISHED"
    assert first["number"] == 0
    # Counted again from the study by a resumed search's driver.
    assert StudyDriver(study, space, img_size=16, target=100, epoch_budget=7).epochs_trained == 9


def test_the_warm_start_floor_applies_to_the_default_trials_only():
    from nas.engine.settings import DEFAULT_TRIALS, SearchConfig

    assert SearchConfig().warm_start and SearchConfig().target_trials == DEFAULT_TRIALS == 12
    assert not SearchConfig(trials=2).warm_start and SearchConfig(trials=2).target_trials == 2  # asked for: exact
    assert not SearchConfig(presets=False).warm_start
