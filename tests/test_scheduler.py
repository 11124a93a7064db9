"""Pareto-aware asynchronous successive halving (nas.engine.scheduler.ParetoASHA), on fake trials: no Ray cluster."""

import itertools
import json
import math
import random
from types import SimpleNamespace

import numpy as np
import pytest
from ray.tune.schedulers import TrialScheduler

from nas import objectives
from nas.engine.scheduler import AccuracyASHA, ParetoASHA, _hv_contributions

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


def trial(tid, params=None, throughput=None, hint=True):
    config = {"arch": {"depth": 2}}
    if hint:
        config["objectives_hint"] = {"params": params, "throughput": throughput}
    return SimpleNamespace(trial_id=tid, config=config)


def epoch(e, acc, loss=1.0):
    return {"epoch": e, "val_accuracy": acc, "train_loss": loss}


def reach(s, t, e, acc):
    """Report epochs 1..e of trial ``t`` (accuracy ``acc`` each), returning the last decision."""
    out = CONTINUE
    for k in range(1, e + 1):
        out = s.on_trial_result(None, t, epoch(k, acc))
        if out == STOP:
            break
    return out


# --------------------------------------------------------------------------- construction
@pytest.mark.parametrize("kwargs, field", [
    ({"grace_period": 0}, "grace_period"), ({"eta": 1}, "eta"), ({"grace_period": 4, "max_t": 3}, "max_t"),
    ({"eta": 2.5}, "eta"), ({"grace_period": True}, "grace_period"), ({"bounds": {"accuracy": [0, 1]}}, "bounds"),
])
def test_bad_parameters_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        ParetoASHA(**kwargs)


def test_rungs_are_grace_times_powers_of_eta_below_max_t():
    assert ParetoASHA(grace_period=1, eta=3, max_t=27).rungs == [1, 3, 9]
    assert ParetoASHA(grace_period=2, eta=2, max_t=17).rungs == [2, 4, 8, 16]
    assert ParetoASHA(grace_period=5, eta=2, max_t=5).rungs == []
    s = ParetoASHA(grace_period=1, eta=3, max_t=27)
    with pytest.raises(ValueError, match="^epoch:"):
        s.verdicts(2)


def test_set_search_properties_accepts_ray_metric_lists():
    s = ParetoASHA()
    assert s.set_search_properties(list(objectives.names()), [o.mode for o in objectives.spec()]) is True
    assert "Pareto" in s.debug_string()


# --------------------------------------------------------------------------- the rule
def test_rung_with_fewer_than_eta_entries_stops_nobody():
    s = ParetoASHA(grace_period=1, eta=4, max_t=9)
    big = dict(params=1e7, throughput=10.0)
    assert s.on_trial_result(None, trial("best", 1e4, 1e5), epoch(1, 0.9)) == CONTINUE
    # dominated by "best" in every objective, yet the rung has fewer than eta = 4 entries
    assert [s.on_trial_result(None, trial(f"bad{i}", **big), epoch(1, 0.1 + i / 100)) for i in range(2)] == [CONTINUE] * 2
    assert s.stopped == {}
    # the eta-th entry is judged: dominated and outside the top ceil(4/4) = 1, it stops
    assert s.on_trial_result(None, trial("bad2", **big), epoch(1, 0.05)) == STOP
    assert s.stopped["bad2"]["rung"] == 1


@pytest.mark.parametrize("seed", range(10))
def test_a_trial_dominating_its_rung_is_never_stopped(seed):
    rng = random.Random(seed)
    eta = rng.choice([2, 3, 4])
    s = ParetoASHA(grace_period=1, eta=eta, max_t=10)
    rows = [(rng.uniform(0.1, 0.8), 10 ** rng.uniform(4, 7), 10 ** rng.uniform(1, 5)) for _ in range(rng.randint(0, 12))]
    for i, (a, p, t) in enumerate(rows):
        s.on_trial_result(None, trial(f"t{i}", p, t), epoch(1, a))
    # strictly better than every entry in every objective, arriving last; then more trials arrive after it
    star = trial("star", 5e3, 2e5)
    assert s.on_trial_result(None, star, epoch(1, 0.95)) == CONTINUE
    for i in range(rng.randint(0, 6)):
        s.on_trial_result(None, trial(f"late{i}", 10 ** rng.uniform(4, 7), 10 ** rng.uniform(1, 5)),
                          epoch(1, rng.uniform(0.1, 0.8)))
    assert s.verdicts(1)["star"] == CONTINUE
    assert s.ranking(1)[0] == ["star"]
    assert "star" not in s.stopped


def test_a_trial_dominating_its_rung_survives_whatever_its_arrival_position():
    rows = {f"t{i}": (0.2 + i * 0.05, 1e6 * (1 + i), 100.0 / (1 + i)) for i in range(6)}
    for pos in range(7):
        s = ParetoASHA(grace_period=1, eta=2, max_t=4)
        order = list(rows)
        order.insert(pos, "star")
        for tid in order:
            a, p, t = (0.9, 1e4, 1e4) if tid == "star" else rows[tid]
            out = s.on_trial_result(None, trial(tid, p, t), epoch(1, a))
            if tid == "star":
                assert out == CONTINUE


def test_small_fast_inaccurate_design_survives_an_early_rung():
    n, eta = 9, 3
    s = ParetoASHA(grace_period=1, eta=eta, max_t=9)
    for i in range(n - 1):  # accurate, large and slow designs
        s.on_trial_result(None, trial(f"big{i}", 5e6 + i * 1e5, 200.0 - i), epoch(1, 0.7 + i * 0.01))
    tiny = trial("tiny", 2e4, 5e4)
    assert s.on_trial_result(None, tiny, epoch(1, 0.3)) == CONTINUE
    assert "tiny" in s.ranking(1)[0]
    # an accuracy-only ASHA would have stopped it: it has the worst accuracy, outside the top ceil(n/eta)
    acc = {t: e["accuracy"] for t, e in s.rung_entries(1).items()}
    assert sorted(acc, key=acc.get, reverse=True).index("tiny") >= math.ceil(n / eta)
    # the same accuracy in a large, slow design is stopped
    s2 = ParetoASHA(grace_period=1, eta=eta, max_t=9)
    for i in range(n - 1):
        s2.on_trial_result(None, trial(f"big{i}", 5e6 + i * 1e5, 200.0 - i), epoch(1, 0.7 + i * 0.01))
    assert s2.on_trial_result(None, trial("slow", 9e6, 50.0), epoch(1, 0.3)) == STOP


def test_survivors_are_first_front_plus_top_ceil_n_over_eta():
    # one design on front 1, three on front 2 (each best at one thing among them), two on front 3
    rows = {
        "f1": (0.9, 1e4, 1e5),
        "a": (0.8, 1e6, 1e3), "b": (0.6, 2e5, 1e3), "c": (0.6, 1e6, 1e4),
        "d": (0.5, 3e6, 1e2), "e": (0.4, 4e6, 50.0),
    }
    s = ParetoASHA(grace_period=1, eta=2, max_t=4)  # keep ceil(6/2) = 3
    for tid, (a, p, t) in rows.items():
        s.on_trial_result(None, trial(tid, p, t), epoch(1, a))
    fronts = s.ranking(1)
    assert [sorted(f) for f in fronts] == [["f1"], ["a", "b", "c"], ["d"], ["e"]]
    # within front 2, larger hypervolume contribution first (as normalised_hypervolume measures it)
    b = s.bounds
    front2 = [rows[t] for t in "abc"]
    contrib = {t: objectives.normalised_hypervolume(front2, b)
               - objectives.normalised_hypervolume([r for r in front2 if r != rows[t]], b) for t in "abc"}
    assert fronts[1] == sorted("abc", key=lambda t: -contrib[t])
    v = s.verdicts(1)
    kept = {"f1", *fronts[1][:2]}
    assert {t for t, d in v.items() if d == CONTINUE} == kept
    assert len(kept) == math.ceil(len(rows) / 2)


def test_a_large_first_front_is_kept_whole():
    s = ParetoASHA(grace_period=1, eta=3, max_t=9)
    # six mutually non-dominated designs (accuracy rises with size), one dominated: keep 6 > ceil(7/3) = 3
    for i in range(6):
        s.on_trial_result(None, trial(f"p{i}", 1e4 * 3 ** i, 1e5 / 3 ** i), epoch(1, 0.3 + 0.1 * i))
    assert s.on_trial_result(None, trial("dom", 1e7, 1.0), epoch(1, 0.3)) == STOP
    assert s.stopped.keys() == {"dom"}
    assert [d for t, d in sorted(s.verdicts(1).items()) if t != "dom"] == [CONTINUE] * 6


def test_hv_contributions_match_normalised_hypervolume():
    b = objectives.hv_bounds(num_classes=10, params=(1e4, 1e7))
    rows = [(0.8, 1e6, 1e3), (0.6, 2e5, 2e3), (0.5, 5e4, 1e4), (0.95, 9e6, 10.0)]
    x = np.array([b.normalise(r) for r in rows])
    got = _hv_contributions(x)
    want = [objectives.normalised_hypervolume(rows, b) - objectives.normalised_hypervolume(rows[:i] + rows[i + 1:], b)
            for i in range(len(rows))]
    assert np.allclose(got, want) and all(w > 0 for w in want)


def test_without_hints_only_accuracy_counts():
    s = ParetoASHA(grace_period=1, eta=3, max_t=9)
    accs = [0.5, 0.9, 0.3, 0.7, 0.6, 0.2]
    out = {f"t{i}": s.on_trial_result(None, trial(f"t{i}", hint=False), epoch(1, a)) for i, a in enumerate(accs)}
    assert s.ranking(1) == [["t1"], ["t3"], ["t4"], ["t0"], ["t2"], ["t5"]]
    assert {t for t, d in s.verdicts(1).items() if d == CONTINUE} == {"t1", "t3"}  # top ceil(6/3)
    assert out == {"t0": CONTINUE, "t1": CONTINUE, "t2": STOP, "t3": CONTINUE, "t4": STOP, "t5": STOP}
    # a trial with hints dominates the hint-less ones it is at least as accurate as ("hinted" ties "t3"),
    # and the more accurate hint-less "t1" does not dominate it
    s.on_trial_result(None, trial("hinted", 1e6, 1e3), epoch(1, 0.7))
    fronts = s.ranking(1)
    assert sorted(fronts[0]) == ["hinted", "t1"] and fronts[1] == ["t3"]
    # nor does it dominate a small, fast, inaccurate design
    s.on_trial_result(None, trial("tiny", 1e4, 1e5), epoch(1, 0.25))
    assert sorted(s.ranking(1)[0]) == ["hinted", "t1", "tiny"]
    # malformed hints are unknown too
    s2 = ParetoASHA(grace_period=1, eta=2, max_t=4)
    s2.on_trial_result(None, trial("x", "big", float("nan")), epoch(1, 0.5))
    assert s2.rung_entries(1)["x"] == {"accuracy": 0.5, "params": None, "throughput": None}


def test_non_finite_accuracy_ranks_last():
    s = ParetoASHA(grace_period=1, eta=2, max_t=4)
    s.on_trial_result(None, trial("ok", 1e6, 1e3), epoch(1, 0.2))
    assert s.on_trial_result(None, trial("nan", 1e6, 1e3), epoch(1, float("nan"))) == STOP
    assert s.rung_entries(1)["nan"]["accuracy"] is None


# --------------------------------------------------------------------------- arrival order
ROWS = {  # mixed: a front of three, dominated designs, one without hints
    "a": (0.85, 3e6, 300.0), "b": (0.60, 5e4, 2e4), "c": (0.75, 5e5, 2e3),
    "d": (0.70, 4e6, 250.0), "e": (0.50, 6e5, 1e3), "f": (0.40, 8e6, 90.0), "g": (0.65, None, None),
}


def _trial(tid):
    a, p, t = ROWS[tid]
    return trial(tid, p, t, hint=p is not None)


def test_full_rung_verdicts_do_not_depend_on_arrival_order():
    reference = None
    perms = list(itertools.permutations(ROWS))
    random.Random(0).shuffle(perms)
    for perm in perms[:60]:
        s = ParetoASHA(grace_period=1, eta=3, max_t=9)
        decisions = [s.on_trial_result(None, _trial(tid), epoch(1, ROWS[tid][0])) for tid in perm]
        v = s.verdicts(1)
        reference = reference or v
        assert v == reference
        # the last arrival is compared with every earlier entry: its decision is the full-rung verdict
        assert decisions[-1] == v[perm[-1]]
    stopped = {t for t, d in reference.items() if d == STOP}
    assert stopped and stopped != set(ROWS)  # the property is not vacuous
    # the small-fast and accurate ends of the front go on; the hint-less "g" (more accurate than "b")
    # competes on accuracy alone and does not push "b" off the first front
    assert "b" not in stopped and "a" not in stopped
    assert sorted(s.ranking(1)[0]) == ["a", "b", "c"]


def test_async_caveat_early_decisions_are_not_revisited():
    s = ParetoASHA(grace_period=1, eta=2, max_t=4)
    s.on_trial_result(None, trial("mid", 1e6, 1e3), epoch(1, 0.5))
    assert s.on_trial_result(None, trial("worse", 2e6, 5e2), epoch(1, 0.4)) == STOP
    # "mid" went on when the rung held two; many better trials arrive later, "mid" is not recalled
    for i in range(4):
        s.on_trial_result(None, trial(f"good{i}", 1e5 / (i + 1), 1e4 * (i + 1)), epoch(1, 0.9 + i / 100))
    assert s.verdicts(1)["mid"] == STOP
    assert "mid" not in s.stopped
    assert s.on_trial_result(None, trial("mid", 1e6, 1e3), epoch(2, 0.5)) == CONTINUE  # rung 2 has only "mid"


# --------------------------------------------------------------------------- results it lets through
def test_results_without_epoch_and_final_results_continue():
    s = ParetoASHA(grace_period=1, eta=2, max_t=4)
    t = trial("t", 1e4, 1e5)
    assert s.on_trial_result(None, t, {"val_accuracy": 0.1}) == CONTINUE
    assert s.on_trial_result(None, t, {"fail_reason": "RuntimeError: boom"}) == CONTINUE
    final = {"accuracy": 0.1, "params": 1e4, "throughput": 1e5, "epoch": 2}
    assert s.on_trial_result(None, t, final) == CONTINUE
    assert s.on_trial_result(None, t, {"epoch": "one", "val_accuracy": 0.1}) == CONTINUE
    assert all(not s.rung_entries(m) for m in s.rungs)


def test_off_rung_epochs_record_nothing_and_later_rungs_decide():
    s = ParetoASHA(grace_period=1, eta=2, max_t=8)  # rungs 1, 2, 4
    good, bad = trial("good", 1e4, 1e5), trial("bad", 1e7, 10.0)
    assert reach(s, good, 4, 0.9) == CONTINUE
    assert s.on_trial_result(None, bad, epoch(1, 0.95)) == CONTINUE  # better accuracy at rung 1: front 1
    assert s.on_trial_result(None, bad, epoch(2, 0.5)) == STOP  # dominated at rung 2
    assert set(s.rung_entries(2)) == {"good", "bad"} and set(s.rung_entries(4)) == {"good"}
    assert s.on_trial_result(None, bad, epoch(3, 0.5)) == STOP  # a stopped trial stays stopped
    assert s.stopped["bad"]["epoch"] == 2 and s.stopped["bad"]["rung"] == 2


def test_a_trial_resumed_after_the_promotion_is_neither_stopped_nor_learned_from():
    """A promoted trial resumes at epoch 4 of 6 (paused at 3): the rule that would stop the same report from a
    fresh trial (dominated at rung 3) lets it run to the end, and its curve does not feed the curve rule."""
    from nas.engine.scheduler import RESUME_KEY

    for s in (ParetoASHA(grace_period=1, eta=3, max_t=6), AccuracyASHA(grace_period=1, eta=3, max_t=6)):
        for name in "abc":
            assert reach(s, trial(name, 1e4, 1e5), 6, 0.9) == CONTINUE
            s.on_trial_complete(None, trial(name, 1e4, 1e5), {})
        fresh = trial("fresh", 1e7, 10.0)
        assert reach(s, fresh, 4, 0.1) == STOP  # worse in everything: stopped by the rule at rung 3
        resumed = trial("resumed", 1e7, 10.0)
        resumed.config[RESUME_KEY] = "/runs/s/weights/trial_00003.paused.pt"
        assert [s.on_trial_result(None, resumed, epoch(e, 0.1)) for e in (4, 5, 6)] == [CONTINUE] * 3
        assert "resumed" not in s.stopped
    learned = ParetoASHA(grace_period=1, eta=3, max_t=6, curve_aware=True)
    learned.on_trial_complete(None, resumed, {})
    assert learned._finished == []


def test_a_skipped_rung_is_recorded_when_passed():
    s = ParetoASHA(grace_period=1, eta=2, max_t=8)
    s.on_trial_result(None, trial("a", 1e4, 1e5), epoch(2, 0.9))
    assert set(s.rung_entries(1)) == {"a"} and set(s.rung_entries(2)) == {"a"}


# --------------------------------------------------------------------------- stopped trials and budget
def test_stopped_trials_record_epoch_curve_and_budget_saved():
    s = ParetoASHA(grace_period=3, eta=2, max_t=12)  # rungs 3, 6
    for k in range(1, 4):
        s.on_trial_result(None, trial("keep", 1e4, 1e5), epoch(k, 0.5 + k / 10, loss=2.0 / k))
    out = [s.on_trial_result(None, trial("drop", 1e7, 10.0), epoch(k, 0.1 * k, loss=3.0 / k)) for k in range(1, 4)]
    assert out == [CONTINUE, CONTINUE, STOP]
    assert s.stopped.keys() == {"drop"}
    rec = s.stopped["drop"]
    assert rec["epoch"] == 3
    assert [r["epoch"] for r in rec["curve"]] == [1, 2, 3]
    assert rec["curve"][1] == {"epoch": 2, "val_accuracy": pytest.approx(0.2), "train_loss": pytest.approx(1.5)}
    assert s.epochs_saved(12) == 9 and s.epochs_saved() == 9 and s.epochs_saved(20) == 17
    s.on_trial_complete(None, trial("keep"), {"accuracy": 0.9})
    assert "keep" not in s.get_state()["curves"]


def test_a_restarted_trial_restarts_its_curve():
    s = ParetoASHA(grace_period=2, eta=2, max_t=8)
    t = trial("t", 1e4, 1e5)
    for k in (1, 2, 1):
        s.on_trial_result(None, t, epoch(k, 0.5))
    assert [r["epoch"] for r in s.get_state()["curves"]["t"]] == [1]


# --------------------------------------------------------------------------- state
def _stream(seed, n=24):
    """Per-epoch results of ``n`` trials, interleaved at random, each up to 8 epochs."""
    rng = random.Random(seed)
    trials = {f"t{i:02d}": (rng.uniform(0.2, 0.8), 10 ** rng.uniform(4, 7), 10 ** rng.uniform(1, 5)) for i in range(n)}
    pending = {t: 1 for t in trials}
    out = []
    while pending:
        tid = rng.choice(sorted(pending))
        a, p, tp = trials[tid]
        k = pending[tid]
        out.append((trial(tid, p, tp), epoch(k, min(0.99, a + 0.02 * k))))
        pending[tid] += 1
        if pending[tid] > 8:
            del pending[tid]
    return out


def _feed(s, stream):
    out, dead = [], set()
    for t, r in stream:
        if t.trial_id in dead:
            continue
        d = s.on_trial_result(None, t, r)
        out.append((t.trial_id, r["epoch"], d))
        if d == STOP:
            dead.add(t.trial_id)
    return out, dead


@pytest.mark.parametrize("seed", range(3))
def test_restored_scheduler_makes_the_same_decisions(seed, tmp_path):
    stream = _stream(seed)
    half = len(stream) // 2
    whole = ParetoASHA(grace_period=1, eta=3, max_t=9)
    want, _ = _feed(whole, stream)
    assert any(d == STOP for *_, d in want) and whole.stopped

    first = ParetoASHA(grace_period=1, eta=3, max_t=9)
    got1, dead = _feed(first, stream[:half])
    state = json.loads(json.dumps(first.get_state(), allow_nan=False))  # JSON-able, strictly
    assert [r["epoch"] for r in state["rungs"]] == [1, 3]

    resumed = ParetoASHA()  # other parameters: the state's replace them, so the rungs are the same
    resumed.set_state(state)
    assert (resumed.grace_period, resumed.eta, resumed.max_t) == (1, 3, 9)
    got2, _ = _feed(resumed, [(t, r) for t, r in stream[half:] if t.trial_id not in dead])
    assert got1 + got2 == want
    assert resumed.get_state() == whole.get_state()
    assert resumed.epochs_saved(9) == whole.epochs_saved(9) > 0

    path = tmp_path / "scheduler.json"
    first.save(str(path))
    restored = ParetoASHA(grace_period=2, eta=2, max_t=4)
    restored.restore(str(path))
    got3, _ = _feed(restored, [(t, r) for t, r in stream[half:] if t.trial_id not in dead])
    assert got3 == got2


def test_state_records_rungs_entries_and_bounds():
    b = objectives.hv_bounds(num_classes=10, params=(1e4, 1e7))
    s = ParetoASHA(grace_period=1, eta=2, max_t=4, bounds=b)
    s.on_trial_result(None, trial("a", 1e5, 1e3), epoch(1, 0.5))
    s.on_trial_result(None, trial("b", hint=False), epoch(1, 0.4))
    st = s.get_state()
    assert st["rungs"] == [{"epoch": 1, "entries": {"a": {"accuracy": 0.5, "params": 1e5, "throughput": 1e3},
                                                    "b": {"accuracy": 0.4, "params": None, "throughput": None}}},
                           {"epoch": 2, "entries": {}}]
    assert objectives.HVBounds.from_dict(st["bounds"]) == b
    other = ParetoASHA()
    other.set_state(st)
    assert other.bounds == b and other.get_state() == st


@pytest.mark.parametrize("mutate, field", [
    (lambda st: st.update(version=99), "version"),
    (lambda st: st.update(eta=1), "eta"),
    (lambda st: st.update(objectives=["accuracy"]), "objectives"),
    (lambda st: st.update(rungs=[{"epoch": 5, "entries": {}}]), "epoch"),
    (lambda st: st.update(rungs=[{"entries": {}}]), "rungs"),
])
def test_set_state_rejects_foreign_state(mutate, field):
    s = ParetoASHA(grace_period=1, eta=2, max_t=4)
    st = s.get_state()
    mutate(st)
    fresh = ParetoASHA(grace_period=1, eta=2, max_t=4)
    with pytest.raises(ValueError, match=f"^{field}:"):
        fresh.set_state(st)
    assert fresh.get_state() == s.get_state()  # left as it was


# --------------------------------------------------------------------------- the single-objective baseline
def test_accuracy_asha_is_rays_asha_on_accuracy_and_ignores_params_and_throughput():
    """The baseline stops a tiny, fast design for its low first-epoch accuracy; ParetoASHA keeps it (it is
    on the rung's first front). Both see the same results in the same order."""
    from nas.engine.scheduler import AccuracyASHA

    asha, pareto = AccuracyASHA(grace_period=1, eta=3, max_t=3), ParetoASHA(grace_period=1, eta=3, max_t=3)
    assert asha.rungs == pareto.rungs == [1]
    runs = [("a", 0.90, 5e6, 100.0), ("b", 0.91, 5e6, 100.0), ("c", 0.20, 1e4, 1e5)]
    for tid, acc, params, thr in runs:
        t = trial(tid, params, thr)
        result = {**epoch(1, acc), "params": params, "throughput": thr}
        asha_decision, pareto_decision = asha.on_trial_result(None, t, result), pareto.on_trial_result(None, t, result)
        assert pareto_decision == CONTINUE
        # Ray's ASHA: below the (1 - 1/eta) quantile of the accuracies already at the rung stops.
        assert asha_decision == (STOP if tid == "c" else CONTINUE)
    assert set(asha.stopped) == {"c"} and not pareto.stopped
    assert asha.stopped["c"]["epoch"] == asha.stopped["c"]["rung"] == 1
    assert [r["val_accuracy"] for r in asha.stopped["c"]["curve"]] == [0.20]
    assert asha.on_trial_result(None, trial("c"), epoch(2, 0.99)) == STOP  # stopped stays stopped
    assert asha.epochs_saved() == 2
    assert asha.on_trial_result(None, trial("a"), {"accuracy": 0.9, "epoch": 3}) == CONTINUE  # final result
    state = json.loads(json.dumps(asha.get_state()))
    assert state["version"] == "asha" and set(state["stopped"]) == {"c"}
    with pytest.raises(ValueError, match="^eta: "):
        AccuracyASHA(eta=1)


# --------------------------------------------------------------------------- learning-curve-aware stopping
def _finish(s, tid, curve, params, throughput):
    t = trial(tid, params, throughput)
    for k, acc in enumerate(curve, start=1):
        if s.on_trial_result(None, t, epoch(k, acc)) == STOP:
            return
    s.on_trial_complete(None, t, {"accuracy": curve[-1]})


def test_curve_aware_prediction_is_a_least_squares_line_with_a_95_percent_interval():
    from scipy.stats import t as student

    s = ParetoASHA(grace_period=1, eta=3, max_t=4, curve_aware=True)
    rng = np.random.default_rng(0)
    early = rng.uniform(0.2, 0.6, size=6)
    final = 0.3 + early + rng.normal(0, 0.02, size=6)
    assert s.predict_final(1, 0.4) is None  # no full curve yet
    for i, (a, f) in enumerate(zip(early, final, strict=True)):
        _finish(s, f"f{i}", [a, a, a, f], 1e9, 1.0)  # huge and slow: never dominating anyone
    b, a0 = np.polyfit(early, final, 1)
    resid = final - (a0 + b * early)
    se = math.sqrt(resid @ resid / 4) * math.sqrt(1 + 1 / 6 + (0.4 - early.mean()) ** 2
                                                  / np.sum((early - early.mean()) ** 2))
    mean, hi = s.predict_final(1, 0.4)
    assert mean == pytest.approx(a0 + b * 0.4) and hi == pytest.approx(mean + student.ppf(0.975, 4) * se)


def test_curve_aware_stops_only_what_even_its_optimistic_prediction_cannot_lift_off_the_front():
    plain = ParetoASHA(grace_period=1, eta=3, max_t=4)
    aware = ParetoASHA(grace_period=1, eta=3, max_t=4, curve_aware=True)
    for s in (plain, aware):
        # full curves: a late bloomer's final accuracy is far above its first epoch
        for i, (first, last) in enumerate([(0.2, 0.9), (0.3, 0.92), (0.5, 0.95), (0.6, 0.96), (0.25, 0.91)]):
            _finish(s, f"f{i}", [first, 0.5, 0.7, last], 100_000 + i, 1000.0)
        for i in range(3):  # a rung of strong starters
            reach(s, trial(f"r{i}", 50_000, 5000.0), 1, 0.7)
    assert aware.predict_final(1, 0.2) is not None  # at least MIN_CURVES full curves were learnt from
    small_slow_starter = trial("late", 60_000, 4000.0)  # off the rung's front at epoch 1 (0.2)
    assert plain.on_trial_result(None, small_slow_starter, epoch(1, 0.2)) == STOP
    # its predicted final (about 0.9) is not dominated by any full trial (all larger): it goes on
    assert aware.on_trial_result(None, trial("late", 60_000, 4000.0), epoch(1, 0.2)) == CONTINUE
    # a design larger and slower than a full trial that reached 0.96, predicted well below: stopped
    hopeless = trial("big", 200_000, 500.0)
    assert aware.surely_dominated(1, 0.2, [200_000, 500.0])
    assert aware.on_trial_result(None, hopeless, epoch(1, 0.2)) == STOP and "big" in aware.stopped
    state = aware.get_state()
    again = ParetoASHA()
    again.set_state(json.loads(json.dumps(state)))
    assert again.curve_aware and again.predict_final(1, 0.3) == pytest.approx(aware.predict_final(1, 0.3))
