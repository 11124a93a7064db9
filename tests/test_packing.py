"""Trials packed per GPU (--gpus-per-trial auto): the plan from measured memory and busy fraction, the retry
alone of a trial that ran out of memory packed, and a CPU search that behaves as before."""

from __future__ import annotations

import functools

import pytest
from optuna.trial import TrialState

from nas.engine.driver import StudyDriver
from nas.engine.packing import ALONE_KEY, GPU_SHARE_KEY, PackingPlan, is_out_of_memory
from nas.engine.ray_backend import trial_resources
from nas.engine.settings import SearchConfig, SearchError
from nas.study import create_or_load_study, open_storage
from search_spaces import SearchSpace

GiB = 2**30
TWO = SearchSpace(attention=("fnet",), embed_dim=(32, 48), depth=(1, 2), num_heads=(2,), patch_size=(4,),
                  mlp_ratio=(2.0,), pos_encoding=("none",), stem=("patch",))


def test_the_plan_packs_by_the_tighter_of_memory_and_busy_fraction():
    plan = PackingPlan(gpu_memory=80 * GiB)
    assert plan.per_gpu() == 1 and "until the first trial is measured alone" in plan.describe()
    plan.observe({"train_peak_memory": 2 * GiB, "gpu_busy": 0.16}, alone=True)
    assert plan.per_gpu() == 6  # ceil(0.9 / 0.16); memory would allow 32
    assert plan.share() == pytest.approx(1 / 6)
    plan.observe({"train_peak_memory": 20 * GiB, "gpu_busy": 0.05}, alone=False)  # packed: busy not used
    assert plan.per_gpu() == 3  # floor(80 * 0.8 / 20) = 3 now binds
    assert "3 trial(s) per GPU" in plan.describe() and "20,480 MiB" in plan.describe()
    tiny = PackingPlan(gpu_memory=80 * GiB)
    tiny.observe({"train_peak_memory": 100 * 2**20, "gpu_busy": 0.01}, alone=True)
    assert tiny.per_gpu() == 16  # the cap
    tiny.on_out_of_memory()
    assert tiny.per_gpu() == 8  # halved after an out-of-memory error
    cpu = PackingPlan(gpu_memory=80 * GiB)
    cpu.observe({"train_peak_memory": None, "gpu_busy": None, "accuracy": 0.5}, alone=True)  # a CPU result
    assert cpu.per_gpu() == 1
    for bad in ({"gpu_memory": 0}, {"gpu_memory": 1, "margin": 1.0}, {"gpu_memory": 1, "max_per_gpu": 0},
                {"gpu_memory": 1, "target_busy": 0}):
        with pytest.raises(ValueError, match=f"^{[k for k in bad if k != 'gpu_memory' or len(bad) == 1][0]}:"):
            PackingPlan(**bad)


def test_out_of_memory_reasons_are_recognised():
    assert is_out_of_memory("OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    assert not is_out_of_memory("RuntimeError: shapes do not match") and not is_out_of_memory(None)


@pytest.fixture
def study(tmp_path):
    return create_or_load_study(open_storage(f"sqlite:///{tmp_path / 'p.db'}"), "p")


def test_a_trial_out_of_memory_while_packed_runs_again_alone_and_is_not_failed(study):
    driver = StudyDriver(study, TWO, img_size=16, target=2)
    driver.packing = PackingPlan(gpu_memory=80 * GiB)
    first = driver.suggest("a")
    assert first[GPU_SHARE_KEY] == 1.0  # the first trial is measured alone
    driver.on_trial_complete("a", {"accuracy": 0.5, "params": 1000, "throughput": 100.0,
                                   "train_peak_memory": 4 * GiB, "gpu_busy": 0.25})
    packed = driver.suggest("b")
    assert packed[GPU_SHARE_KEY] == pytest.approx(1 / 4) and ALONE_KEY not in packed
    driver.on_trial_complete("b", {"fail_reason": "OutOfMemoryError: CUDA out of memory.", "traceback": "tb"})
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE, TrialState.RUNNING]  # not failed
    assert driver.remaining() == 1 and driver.packing.per_gpu() == 2  # halved
    again = driver.suggest("c")
    assert again[ALONE_KEY] and again[GPU_SHARE_KEY] == 1.0 and again["number"] == packed["number"]
    assert again["arch"] == packed["arch"] and driver.retried == 1
    driver.on_trial_complete("c", {"accuracy": 0.6, "params": 2000, "throughput": 50.0})
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert driver.suggest("d") == driver.FINISHED  # two complete trials: the target


def test_a_retry_pending_when_the_search_ends_is_failed_not_left_running(study):
    driver = StudyDriver(study, TWO, img_size=16, target=1)
    driver.packing = PackingPlan(gpu_memory=80 * GiB)
    driver.packing.observe({"train_peak_memory": GiB, "gpu_busy": 0.5}, alone=True)
    driver.suggest("a")
    driver.on_trial_complete("a", {"fail_reason": "OutOfMemoryError: CUDA out of memory."})
    assert driver.abandon_retries() == [0]
    (t,) = study.get_trials()
    assert t.state == TrialState.FAIL and t.user_attrs["fail_reason"].startswith("stopped")


def test_on_the_cpu_a_search_runs_as_before():
    cfg = SearchConfig()
    assert cfg.gpus_per_trial == "auto"
    cfg.validate()
    assert not cfg.packed(0.0) and cfg.resolved_gpus_per_trial(0.0) == 0.0 and cfg.resolved_max_concurrent(0.0) == 1
    assert cfg.packed(2.0) and cfg.resolved_max_concurrent(2.0) == 32
    fixed = SearchConfig(gpus_per_trial="0.5")
    fixed.validate()
    assert fixed.gpus_per_trial == 0.5 and fixed.resolved_max_concurrent(2.0) == 4 and not fixed.packed(2.0)
    for bad in ("many", "-1", "1.5"):
        with pytest.raises(SearchError, match="^gpus_per_trial:"):
            SearchConfig(gpus_per_trial=bad).validate()
    # what Ray is asked for, per trial of a packed search
    pgf = functools.partial(trial_resources, 2.0)({GPU_SHARE_KEY: 0.25})
    assert pgf.required_resources == {"CPU": 2.0, "GPU": 0.25}
