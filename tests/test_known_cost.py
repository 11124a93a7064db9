"""Known-cost acquisition: params exact, throughput measured or predicted, expected hypervolume improvement
where only accuracy is uncertain (nas.engine.known_cost)."""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
import optuna
import pytest

from nas import objectives
from nas.engine.known_cost import (
    CostContext,
    KnownCostSampler,
    ThroughputPredictor,
    expected_improvement,
    features,
    hypervolume_improvement,
)
from nas.engine.settings import SearchError, make_sampler
from search_spaces import Architecture, SearchSpace, build_model
from search_spaces.extremes import count_params


def _hv(points):  # normalised, maximisation form, reference 0: the unit cube's hypervolume of the points
    return objectives.hypervolume([[1 - v for v in p] for p in points], [1.0, 1.0, 1.0])


def test_hypervolume_improvement_is_the_difference_of_hypervolumes():
    rng = np.random.default_rng(0)
    for _ in range(40):
        front = rng.uniform(0.05, 0.95, size=(int(rng.integers(0, 6)), 3))
        a, p, t = rng.uniform(0.05, 0.95, size=3)
        want = _hv([*front, (a, p, t)]) - _hv(front)
        assert hypervolume_improvement(front, a, p, t) == pytest.approx(want, abs=1e-12)


def test_expected_improvement_is_the_mean_improvement_under_the_normal():
    rng = np.random.default_rng(1)
    front = rng.uniform(0.1, 0.9, size=(5, 3))
    for mu, sigma in ((0.5, 0.1), (0.8, 0.02), (0.2, 0.3)):
        a = rng.normal(mu, sigma, size=10000)
        mc = np.mean([hypervolume_improvement(front, x, 0.7, 0.6) for x in a])
        assert expected_improvement(front, mu, sigma, 0.7, 0.6) == pytest.approx(mc, rel=0.05, abs=3e-4)
    # a candidate another design beats on both costs and surely on accuracy adds nothing
    beaten = np.array([[0.9, 0.8, 0.8]])
    assert expected_improvement(beaten, 0.3, 0.01, 0.5, 0.5) == 0.0
    assert expected_improvement(beaten, 0.3, 0.01, 0.9, 0.5) > 0.0  # smaller than it: on the front whatever


def test_throughput_predictor_learns_a_cost_law_from_genes():
    space = SearchSpace().for_image(16)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    rows, truth = [], []
    for _ in range(160):
        arch = space.suggest(study.ask())
        n = count_params(arch, 16, 1, 10)
        rows.append(features(arch, n, 16))
        # a made-up device: time grows with params and with tokens
        truth.append(1e9 / (n * (16 // arch.patch_size) ** 2))
    assert ThroughputPredictor(min_points=8).fit(rows[:5], truth[:5]).predict(rows) is None  # too few timed
    model = ThroughputPredictor().fit(rows[:120], truth[:120])
    err = np.abs(model.predict(rows[120:]) / np.array(truth[120:]) - 1)
    assert np.median(err) < 0.15


def _context(**kw):
    space = SearchSpace().for_image(16)
    bounds = objectives.HVBounds(((0.1, 1.0), (5_000, 500_000), (100, 100_000)))
    return CostContext(space, 16, 1, 10, bounds, **kw)


def _fake_study(context, n, seed=0):
    """A study whose trials carry genes, exact params, a cost-law throughput and a gene-law accuracy."""
    study = optuna.create_study(directions=["maximize", "minimize", "maximize"],
                                sampler=optuna.samplers.RandomSampler(seed=seed))
    rng = random.Random(seed)
    for _ in range(n):
        t = study.ask()
        arch = context.space.suggest(t)
        params = count_params(arch, 16, 1, 10)
        t.set_user_attr("arch", arch.to_dict())
        acc = 0.5 + 0.1 * math.log10(params / 5_000) + rng.gauss(0, 0.01)
        study.tell(t, [acc, params, 1e9 / (params * (16 // arch.patch_size) ** 2)])
    return study


def test_default_sampler_scores_from_the_third_proposal():
    """The search's knowncost sampler starts scoring after 2 complete trials, whatever the trial budget (on the
    recorded table 8 start-up proposals left a quarter less truth hypervolume at a quarter of B)."""
    ctx = _context()
    for trials in (6, 1_000):
        sampler = make_sampler("knowncost", 0, trials, context=ctx)
        study = _fake_study(ctx, 1)
        study.sampler = sampler
        ctx.space.suggest(study.ask())
        assert sampler.last == {}  # one complete trial: a random proposal
        study = _fake_study(ctx, 2)
        study.sampler = sampler
        t = study.ask()
        arch = ctx.space.suggest(t)
        assert sampler.last["params"] == count_params(arch, 16, 1, 10)  # scored: the proposal is the candidate


def test_first_proposal_is_the_smallest_candidate_then_random_until_two_are_trained():
    """The smallest design is on every Pareto front (nothing has fewer params): the study's first proposal."""
    base = _context()
    rng = random.Random(5)
    draws = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    finite = []
    for _ in range(40):
        t = draws.ask()
        base.space.suggest(t)
        finite.append(dict(t.params))
    rng.shuffle(finite)
    ctx = CostContext(base.space, 16, 1, 10, base.bounds, candidates=tuple(finite))
    smallest = min(count_params(base.space.suggest(optuna.trial.FixedTrial(p)), 16, 1, 10) for p in finite)
    sampler = KnownCostSampler(ctx, seed=0)
    study = optuna.create_study(directions=["maximize", "minimize", "maximize"], sampler=sampler)
    first = study.ask()
    arch = ctx.space.suggest(first)
    assert count_params(arch, 16, 1, 10) == smallest and sampler.last["smallest"]
    sampler.last = {}
    second = study.ask()  # the first still running: a random proposal, not the smallest again
    ctx.space.suggest(second)
    assert sampler.last["random"] and second.params != first.params
    # in a finite space the random start-up proposals stay inside it and never repeat a design
    proposed = [first.params, second.params]
    for _ in range(len(finite) - 2):
        t = study.ask()
        ctx.space.suggest(t)
        proposed.append(dict(t.params))
    assert sorted(map(repr, map(sorted, map(dict.items, proposed)))) == sorted(repr(sorted(p.items())) for p in finite)
    whole = KnownCostSampler(dataclasses.replace(ctx, candidates=None), seed=0)
    study = optuna.create_study(directions=["maximize", "minimize", "maximize"], sampler=whole)
    ctx.space.suggest(study.ask())
    whole.last = {}
    ctx.space.suggest(study.ask())
    assert whole.last == {}  # a space too big to list: Optuna's RandomSampler
    off = KnownCostSampler(ctx, seed=0, smallest_first=False)
    study = optuna.create_study(directions=["maximize", "minimize", "maximize"], sampler=off)
    ctx.space.suggest(study.ask())
    assert off.last["random"] and "smallest" not in off.last  # the former rule: random from the first proposal


def test_accuracy_spread_is_floored_at_the_forests_out_of_bag_error():
    """Trees that agree can all be wrong: with accuracies the genes do not explain, the calibrated spread is
    the forest's out-of-bag error (about the noise), above the spread over trees for almost every candidate."""
    ctx = _context()
    study = _fake_study(ctx, 24, seed=3)
    rng = random.Random(3)
    noisy = optuna.create_study(directions=["maximize", "minimize", "maximize"])
    for t in study.trials:  # accuracy: pure noise, sd 0.1, unrelated to the genes
        noisy.add_trial(optuna.trial.create_trial(params=t.params, distributions=t.distributions,
                                                  user_attrs=t.user_attrs,
                                                  values=[0.6 + rng.gauss(0, 0.1), *t.values[1:]]))
    spreads = {}
    for calibrate in (True, False):
        sampler = KnownCostSampler(ctx, seed=1, n_mutants=0, calibrate=calibrate)
        cands = sampler._candidates([], set())
        spreads[calibrate] = sampler.score(noisy.trials, cands)["sigma"]
    assert np.min(spreads[True]) > 0.06  # the floor: about the noise's sd (0.1)
    assert np.all(spreads[True] >= spreads[False]) and np.mean(spreads[False] < spreads[True]) > 0.9
    # accuracies the genes explain (the gene law, noise sd 0.01): the floor stays small
    sampler = KnownCostSampler(ctx, seed=1, n_mutants=0)
    s = sampler.score(study.trials, sampler._candidates([], set()))
    assert np.median(s["sigma"]) < 0.5 * np.median(spreads[True])


def test_sampler_proposes_inside_the_space_and_never_over_the_params_budget():
    ctx = _context(max_params=40_000)
    study = _fake_study(ctx, 12)
    assert isinstance(make_sampler("knowncost", 3, 20, context=ctx), KnownCostSampler)
    sampler = KnownCostSampler(ctx, seed=3, n_startup_trials=8, n_random=64, n_mutants=64)
    study.sampler = sampler
    for _ in range(2):
        t = study.ask()
        arch = ctx.space.suggest(t)
        assert ctx.space.contains(arch)
        assert count_params(arch, 16, 1, 10) <= 40_000
        assert sampler.last["params"] == count_params(arch, 16, 1, 10)  # the proposal is the scored candidate
        assert sampler.last["ehvi"] > 0 and sampler.last["candidates"] > 20
        t.set_user_attr("arch", arch.to_dict())
        study.tell(t, [0.6, count_params(arch, 16, 1, 10), 5000.0])
    keys = [Architecture.from_dict(t.user_attrs["arch"]).canonical_key(16) for t in study.trials]
    earlier, proposed = keys[:12], keys[12:]
    assert len(set(proposed)) == 2 and not set(proposed) & set(earlier)  # never a model the study trained
    with pytest.raises(SearchError, match="knowncost needs"):
        make_sampler("knowncost", 0, 10)


def test_params_counted_before_training_equal_the_built_model():
    space = SearchSpace().for_image(16)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=4))
    for _ in range(6):
        arch = space.suggest(study.ask())
        model = build_model(arch, img_size=16, in_chans=1, num_classes=10)
        assert count_params(arch, 16, 1, 10) == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_presets_are_candidates_trained_only_when_their_costs_can_move_the_front():
    from search_spaces.presets import PRESETS

    base = _context()
    presets = tuple((n, base.space.to_params(a)) for n, a in PRESETS.items() if base.space.contains(a))
    study = _fake_study(base, 12, seed=2)

    def scored(values):
        st = optuna.create_study(directions=["maximize", "minimize", "maximize"])
        for t in study.trials:
            st.add_trial(optuna.trial.create_trial(params=t.params, distributions=t.distributions,
                                                   user_attrs=t.user_attrs, values=values(t)))
        # the rule under the forest's own spread (one outlier of 0.99 would lift the out-of-bag floor to ~0.1)
        sampler = KnownCostSampler(CostContext(base.space, 16, 1, 10, base.bounds, presets=presets), seed=0,
                                   n_random=0, n_mutants=0, calibrate=False)
        cands = sampler._candidates([], set())
        assert len(cands) == len(presets)  # with no random draws and no front, the pool is the presets
        return sampler, st, sampler.score(st.trials, cands)

    # one trained design smaller, faster and far more accurate than every preset: no preset can move the front
    _, st, s = scored(lambda t: [0.99, 5_000, 100_000] if t.number == 0 else t.values)
    assert s["dominated"].sum() >= len(presets) // 2  # surely beaten: its optimistic accuracy is below 0.99
    assert np.all(s["ehvi"][s["dominated"]] < 1e-5)
    sampler = KnownCostSampler(CostContext(base.space, 16, 1, 10, base.bounds, presets=presets), seed=0,
                               n_random=0, n_mutants=0, calibrate=False)
    chosen = sampler.propose(st.trials)
    beaten = [p for (_, p), d in zip(presets, s["dominated"], strict=True) if d]
    assert chosen not in beaten  # a surely dominated preset is never proposed
    # a front of inaccurate, large, slow designs: the presets can move it, and the best of them is proposed
    sampler, st, s = scored(lambda t: [0.2, 450_000, 150])
    assert np.all(s["ehvi"] > 0) and not np.any(s["dominated"])
    sampler.n_random = 0
    chosen = sampler.propose(st.trials)
    assert any(chosen == p for _, p in presets) and sampler.last["ehvi"] == pytest.approx(float(np.max(s["ehvi"])),
                                                                                           rel=0.5)
