"""Budgets are hard (the known-costs issue): a proposal whose exact params break --max-params, or whose measured
throughput or memory break --min-throughput / --max-memory, is never trained. It is refused before training,
stored COMPLETE and infeasible with its costs and the budget it breaks, costs zero epochs, counts as no
complete trial, and the sampler is asked again. A budget no design of the space meets is refused at start."""

import optuna
import pytest
from optuna.trial import TrialState

from nas import objectives
from nas.engine.driver import StudyDriver
from nas.engine.settings import SearchConfig, SearchError
from nas.study import create_or_load_study, open_storage, study_status, trained_epochs
from search_spaces import Architecture, SearchSpace, build_model
from search_spaces.extremes import count_params, params_range

SMALL = SearchSpace(attention=("mhsa", "fnet", "mixer", "qna"), embed_dim=(32, 64), depth=(1, 2, 4), num_heads=(2,),
                    patch_size=(4,), mlp_ratio=(2.0, 4.0), stem=("patch", "conv"))


def test_params_are_counted_exactly_before_anything_is_built():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    space = SearchSpace().for_image(16)
    seen = set()
    while len(seen) < len(space.attention):  # every mechanism, random other genes
        arch = space.suggest(study.ask())
        if arch.attention in seen:
            continue
        seen.add(arch.attention)
        model = build_model(arch, img_size=16, in_chans=1, num_classes=10)
        assert count_params(arch, 16, 1, 10) == sum(p.numel() for p in model.parameters() if p.requires_grad)
        deeper = arch.replace(depth=arch.depth + 2)
        model = build_model(deeper, img_size=32, in_chans=3, num_classes=7)  # another shape, more blocks
        assert count_params(deeper, 32, 3, 7) == sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.fixture
def study(tmp_path):
    return create_or_load_study(open_storage(f"sqlite:///{tmp_path / 'b.db'}"), "b")


def test_the_driver_refuses_what_breaks_max_params_and_asks_again(study):
    space = SMALL.for_image(16)
    lo, hi = params_range(space, 16, 1, 10)
    limit = (lo * hi) ** 0.5  # about half the space is over it
    driver = StudyDriver(study, space, img_size=16, target=30, budgets={"max_params": limit}, channels=(1, 10),
                         bounds=objectives.hv_bounds(10))
    refused = []
    for i in range(30):  # about half of the proposals break the budget: none refused in 30 has odds of 1e-9
        proposal = driver.suggest(f"t{i}")  # handed out for training: within the budget
        assert count_params(Architecture.from_dict(proposal["arch"]), 16, 1, 10) <= limit
        refused = [t for t in study.get_trials() if t.user_attrs.get("refused")]
        if refused and i >= 3:
            break
    assert refused, "with half the space over the budget, some proposals must have been refused"
    for t in refused:
        assert t.state == TrialState.COMPLETE
        assert t.values[1] == count_params(Architecture.from_dict(t.user_attrs["arch"]),
                                           16, 1, 10) > limit
        assert t.constraints["max_params"] > 0 and t.user_attrs["refused"]["max_params"] == pytest.approx(t.values[1] / limit - 1)
        assert t.values[0] == pytest.approx(0.1)  # untrained: accuracy at chance (the hypervolume's worst)
        assert trained_epochs(t.state, t.user_attrs) == 0 and "curve" not in t.user_attrs
    assert driver.refused == len(refused) and driver.complete == 0
    status = study_status(study)
    assert status["refused"] == len(refused) and status["complete"] == 0


def test_a_driver_that_can_only_refuse_stops_with_a_reason(study):
    space = SMALL.for_image(16)
    driver = StudyDriver(study, space, img_size=16, target=2, budgets={"max_params": 10.0}, channels=(1, 10),
                         max_refusals=5)
    assert driver.suggest("t0") == StudyDriver.FINISHED
    assert "5 proposals in a row broke the budgets" in driver.stalled
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 5 and driver.complete == 0


def test_a_refused_result_from_a_worker_is_stored_untrained(study):
    driver = StudyDriver(study, SMALL.for_image(16), img_size=16, target=2, budgets={"min_throughput": 1e9})
    proposal = driver.suggest("w")
    driver.on_trial_complete("w", {"refused/min_throughput": 0.99, "params": 5000, "throughput": 1e7,
                                   "peak_memory": 10_000, "flops": 77})  # as Ray flattens it
    t = study.get_trials()[proposal["number"]]
    assert t.state == TrialState.COMPLETE and t.user_attrs["refused"] == {"min_throughput": 0.99}
    assert t.values[1:] == [5000.0, 1e7] and t.user_attrs["flops"] == 77 and driver.complete == 0


def test_a_worker_measures_then_refuses_without_training(digits):
    from nas.engine.trial import run_trial

    reports = []
    settings = {**SearchConfig(epochs=3, throughput_cache=False, min_throughput=1e12).worker_settings(),
                "run_dir": "/nonexistent"}
    arch = {"attention": "fnet", "embed_dim": 32, "depth": 1, "num_heads": 2, "patch_size": 4}
    final = run_trial({"arch": arch, "number": 0, "known": None}, settings, reports.append, digits)
    assert set(final["refused"]) == {"min_throughput"} and final["refused"]["min_throughput"] > 0.99
    assert final["params"] > 0 and final["throughput"] > 0 and "curve" not in final
    assert reports == [final]  # no epoch was reported: nothing was trained


def test_a_budget_no_design_meets_is_refused_at_start(tmp_path, small_space):
    from nas import run_search

    storage = f"sqlite:///{tmp_path / 's.db'}"
    config = SearchConfig(study="tight", storage=storage, config=small_space, max_params=10, run_dir=str(tmp_path))
    with pytest.raises(SearchError, match=r"^max_params: 10 is below the smallest model the space can build at "
                                          r"16 px \([0-9,]+ params\); allowed: >= [0-9,]+$"):
        run_search(config)
    assert "tight" not in [s.study_name for s in optuna.get_all_study_summaries(storage)]


@pytest.mark.slow
def test_a_search_trains_nothing_above_max_params(tmp_path, small_space):
    from nas import run_search

    space = SearchSpace.from_file(small_space).for_image(16)
    lo, hi = params_range(space, 16, 1, 10)
    limit = int((lo * hi) ** 0.5)
    config = SearchConfig(study="budget", trials=3, epochs=1, storage=f"sqlite:///{tmp_path / 's.db'}",
                          run_dir=str(tmp_path / "runs"), config=small_space, presets=False, max_params=limit,
                          train_subset=200, val_subset=100, seed=1)
    study = run_search(config)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    trained = [t for t in complete if not t.user_attrs.get("refused")]
    assert len(trained) == 3 and all(t.values[1] <= limit and t.user_attrs["curve"] for t in trained)
    assert all(t.values[1] > limit and "curve" not in t.user_attrs for t in complete if t.user_attrs.get("refused"))
