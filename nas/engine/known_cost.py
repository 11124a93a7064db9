"""Known-cost acquisition: propose designs by the two objectives that cost nothing to know.

A design's params are exact from its genes (:func:`search_spaces.extremes.count_params`, at the deployment
shape) and its throughput is either measured (a design the study trained) or predicted well from its genes
(:class:`ThroughputPredictor`); only its accuracy needs training. :class:`KnownCostSampler` is an Optuna
sampler that uses this: for every proposal it scores a pool of candidate genes (drawn from the space and
mutated from the study's front, plus the paper presets not yet trained) by the **expected hypervolume
improvement where only accuracy is uncertain**, and proposes the best one.

The acquisition. Map each objective to [0, 1], 1 = best, with the study's hypervolume bounds
(:meth:`nas.objectives.HVBounds.normalise`). For a candidate with known (normalised) costs ``(p, t)`` and an
accuracy ``a``, the hypervolume it adds to the front ``F`` is ``HVI(a) = integral_0^a A(y) dy``, where
``A(y)`` is the part of the box ``[0, p] x [0, t]`` that no front member with accuracy >= ``y`` covers.
``A`` is a step function whose steps sit at the front's accuracies, so with ``a ~ N(mu, sigma^2)`` (a random
forest's mean over its trees, fitted to the study's trials; ``sigma`` its spread over trees, floored at its
out-of-bag error, see :meth:`KnownCostSampler.oob_error`) the expectation is a sum of closed forms, one per
step: ``E[clip(a, lo, hi) - lo]`` (the two-known-objectives case of expected hypervolume improvement;
Emmerich et al., "Single- and multiobjective evolutionary optimization assisted by Gaussian random field
metamodels", IEEE TEC 10(4), 2006). A candidate that a trained design beats on both costs and
is more accurate than its plausible range gets ~0 and is never proposed; one over ``max_params`` is never
in the pool.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import FrozenTrial, TrialState

from search_spaces import SearchSpace
from search_spaces.genes import Architecture, GeneError

from .. import objectives
from ..study.front import is_infeasible

__all__ = ["KnownCostSampler", "ThroughputPredictor", "CostContext", "features", "expected_improvement",
           "hypervolume_improvement"]

def _categories() -> dict[str, tuple[Any, ...]]:
    """The values of the categorical genes a model one-hot encodes: every registered mechanism, stem and
    positional encoding (the space's universe, so features mean the same in every study)."""
    from search_spaces.genes import POS_ENCODINGS, STEMS
    from search_spaces.registry import names

    return {"attention": tuple(names()), "stem": tuple(STEMS), "pos_encoding": tuple(POS_ENCODINGS)}


def features(arch: Architecture, params: float, img_size: int) -> list[float]:
    """The numbers a cost or accuracy model reads of a design: ``log(params)``, ``log2(tokens)`` at
    ``img_size``, ``log(tokens * params)`` (the linear layers' work), ``log(tokens^2 * embed_dim * depth)`` (a
    full attention map's), ``embed_dim``, ``depth``, ``num_heads``, ``mlp_ratio``, ``compact``, the mean MaiT mask ratio,
    the QnA window and the Refiner expansion (0 where the gene does not apply), then one-hot attention, stem and
    positional encoding."""
    tokens = max(1, (img_size // arch.patch_size) ** 2)
    masks = [r for r in (arch.mask_ratios or []) if r is not None]
    row = [math.log(max(params, 1.0)), math.log2(tokens), math.log(tokens * max(params, 1.0)),
           math.log(tokens * tokens * arch.embed_dim * arch.depth), float(arch.embed_dim), float(arch.depth),
           float(arch.num_heads), float(arch.mlp_ratio), float(bool(arch.compact)),
           float(np.mean(masks)) if masks else 0.0, float(arch.qna_window or 0), float(arch.refiner_expansion or 0)]
    for gene, values in _categories().items():
        v = getattr(arch, gene)
        row += [float(v == c) for c in values]
    return row


class ThroughputPredictor:
    """Throughput (img/s) of a design on this device at the deployment shape, predicted from its genes.

    A random forest (scikit-learn's ``RandomForestRegressor``, 200 trees; on the recorded table it beat a
    gradient-boosted model, a ridge line and a FLOPs line at 10 and 20 designs timed) on :func:`features`,
    fitted to ``log(throughput)`` of the designs timed so far (the study's trained trials, and any table of
    timings). Its error on held-out designs is measured in ``benchmarks/known_cost.py`` and stated in
    docs/benchmarks.md. Below ``min_points`` timed designs it predicts nothing (:meth:`predict` returns None).
    """

    def __init__(self, min_points: int = 8, seed: int = 0) -> None:
        self.min_points, self.seed = min_points, seed
        self.model: Any = None

    def fit(self, rows: Sequence[Sequence[float]], throughput: Sequence[float]) -> ThroughputPredictor:
        """Fit on :func:`features` rows and their measured throughputs (img/s, > 0)."""
        pairs = [(r, t) for r, t in zip(rows, throughput, strict=True) if t and t > 0 and math.isfinite(t)]
        if len(pairs) < self.min_points:
            self.model = None
            return self
        from sklearn.ensemble import RandomForestRegressor

        x = np.array([p[0] for p in pairs], dtype=float)
        y = np.log(np.array([p[1] for p in pairs], dtype=float))
        self.model = RandomForestRegressor(n_estimators=200, random_state=self.seed).fit(x, y)
        return self

    def predict(self, rows: Sequence[Sequence[float]]) -> np.ndarray | None:
        """Predicted throughputs (img/s), or None before :meth:`fit` saw ``min_points`` designs."""
        if self.model is None or not len(rows):
            return None
        return np.exp(self.model.predict(np.asarray(rows, dtype=float)))


def _union_area(xs: np.ndarray, ys: np.ndarray) -> float:
    """Area of the union of the boxes ``[0, x_i] x [0, y_i]`` (a 2-D staircase)."""
    if len(xs) == 0:
        return 0.0
    order = np.argsort(-xs, kind="stable")
    x, y = xs[order], np.maximum.accumulate(ys[order])
    widths = x - np.append(x[1:], 0.0)
    return float(np.sum(widths * y))


def _steps(front: np.ndarray, p: float, t: float) -> tuple[np.ndarray, np.ndarray]:
    """The step function ``A(y)`` of :func:`hypervolume_improvement`: ``(edges, areas)``, ``areas[k]`` on
    ``(edges[k+1], edges[k]]``, edges descending from 1 to 0 through the front's accuracies."""
    box = p * t
    if len(front) == 0:
        return np.array([1.0, 0.0]), np.array([box])
    order = np.argsort(-front[:, 0], kind="stable")
    f = front[order]
    xs, ys = np.minimum(f[:, 1], p), np.minimum(f[:, 2], t)
    edges, areas = [1.0], []
    for k in range(len(f)):
        level = float(np.clip(f[k, 0], 0.0, 1.0))
        areas.append(box - _union_area(xs[:k], ys[:k]))
        edges.append(level)
    areas.append(box - _union_area(xs, ys))
    edges.append(0.0)
    return np.array(edges), np.array(areas)


def hypervolume_improvement(front: np.ndarray, accuracy: float, p: float, t: float) -> float:
    """Hypervolume (normalised, maximisation form) the point ``(accuracy, p, t)`` adds to ``front`` (rows of
    normalised ``(accuracy, params, throughput)``, 1 = best, reference point 0)."""
    edges, areas = _steps(front, p, t)
    lo, hi = edges[1:], edges[:-1]
    return float(np.sum(areas * np.clip(np.minimum(accuracy, hi) - lo, 0.0, None)))


def expected_improvement(front: np.ndarray, mu: float, sigma: float, p: float, t: float) -> float:
    """``E[hypervolume_improvement(front, a, p, t)]`` for ``a ~ N(mu, sigma^2)``, in closed form: per step
    ``(lo, hi]`` of ``A``, ``E[clip(a, lo, hi)] - lo`` times the step's area."""
    from scipy.stats import norm

    edges, areas = _steps(front, p, t)
    lo, hi = edges[1:], edges[:-1]
    if sigma <= 1e-12:
        return float(np.sum(areas * np.clip(np.minimum(mu, hi) - lo, 0.0, None)))
    a, b = (lo - mu) / sigma, (hi - mu) / sigma
    clipped = lo * norm.cdf(a) + hi * norm.sf(b) + mu * (norm.cdf(b) - norm.cdf(a)) - sigma * (norm.pdf(b) - norm.pdf(a))
    return float(np.sum(areas * np.clip(clipped - lo, 0.0, None)))


@dataclass(frozen=True)
class CostContext:
    """What a known-cost sampler must know of the study: the space (at the proxy's image size), the
    deployment shape the costs belong to, the hypervolume bounds, the params budget and the presets."""

    space: SearchSpace
    img_size: int
    in_chans: int
    num_classes: int
    bounds: objectives.HVBounds
    max_params: float | None = None
    min_throughput: float | None = None
    presets: tuple[tuple[str, dict[str, Any]], ...] = ()  # (name, Optuna params) candidates never yet trained
    #: A finite space (Optuna params of each design, e.g. a recorded table's): the only candidates when given.
    candidates: tuple[dict[str, Any], ...] | None = None


class _DrawTrial:
    """A stand-in trial for :meth:`SearchSpace.suggest`: each parameter is ``base``'s value or, with
    probability ``rate`` (always, without a base), a random choice."""

    def __init__(self, rng: random.Random, base: dict[str, Any] | None = None, rate: float = 1.0) -> None:
        self.rng, self.base, self.rate, self.params = rng, base or {}, rate, {}

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        keep = name in self.base and self.base[name] in choices and self.rng.random() >= self.rate
        value = self.base[name] if keep else self.rng.choice(list(choices))
        self.params[name] = value
        return value


class KnownCostSampler(BaseSampler):
    """Optuna sampler that spends training only where it can move the front (see the module docstring).

    Each proposal: ``n_random`` new random candidates join a standing pool, ``n_mutants`` are mutated from the
    study's front members (each gene redrawn with probability ``1 / 8``), and the presets of ``context`` not
    yet trained join too; every candidate's params are counted exactly, its throughput is the measured one
    when the design was trained, else :class:`ThroughputPredictor`'s, and its accuracy is a random forest's
    mean and spread over trees (``sklearn.ensemble.RandomForestRegressor`` on :func:`features`, fitted to the
    study's complete trials, the spread floored at the forest's out-of-bag error and at ``noise``). Candidates
    over ``max_params`` are dropped; over ``min_throughput`` by a fitted prediction, too. The candidate of
    largest :func:`expected_improvement` is proposed. Before ``n_startup_trials`` complete trials (default 2,
    the fewest the forest scores from; on the recorded table 8 left 24% less truth hypervolume at a quarter
    of the budget), the study's first proposal is the candidate of fewest params when ``smallest_first`` (the
    smallest design is on the Pareto front whatever its accuracy: nothing has fewer params; in a space too big
    to list, the smallest of the pool's draws) and the others are random: Optuna's RandomSampler, or in a
    finite space (``context.candidates``) a candidate drawn uniformly among those not yet tried.

    Composes with Optuna as any sampler: enqueued trials come first, constraints (refused proposals are
    complete and infeasible) keep those trials off the front it scores against, and the study is the only
    state (it can be rebuilt at every round).

    Raises:
        ValueError: ``n_random`` or ``n_mutants`` below 0.
    """

    def __init__(self, context: CostContext, seed: int | None = None, n_startup_trials: int = 2,
                 n_random: int = 128, n_mutants: int = 128, pool: int = 2048, noise: float = 0.01,
                 calibrate: bool = True, smallest_first: bool = True) -> None:
        if n_random < 0 or n_mutants < 0:
            raise ValueError(f"n_random: n_random and n_mutants must be >= 0, got {n_random}, {n_mutants}")
        self.context, self.n_startup_trials = context, n_startup_trials
        self.n_random, self.n_mutants, self.pool_size, self.noise = n_random, n_mutants, pool, noise
        self.calibrate, self.smallest_first = calibrate, smallest_first
        self._rng = random.Random(seed)
        self._random = RandomSampler(seed=seed)
        self._pool: list[tuple[dict, Architecture, float]] = []
        self._choices = context.space.param_choices()
        self.last: dict[str, Any] = {}  # what the last proposal was scored at (for tests and the curious)

    # ------------------------------------------------------------------------------------------ Optuna API
    def reseed_rng(self) -> None:
        self._rng = random.Random()
        self._random.reseed_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {name: CategoricalDistribution(choices) for name, choices in self._choices.items()}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        from ..study.front import superseded

        trials = study.get_trials(deepcopy=False)
        gone = superseded(study)  # paused at the promotion rung: their accuracy is the rung's, once promoted
        done = [t for t in trials if t.state == TrialState.COMPLETE and t.values and t.number not in gone]
        seen = [t for t in trials if t.params]
        if len(done) < self.n_startup_trials:
            first = not any(t.state != TrialState.FAIL for t in seen)
            if self.smallest_first and first:
                return self.smallest(seen)
            return self.random_candidate(seen) if self.context.candidates is not None else {}
        return self.propose(done, seen=seen)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    # ------------------------------------------------------------------------------------------ acquisition
    def _costs(self, arch: Architecture) -> float | None:
        from search_spaces.extremes import count_params

        try:
            return float(count_params(arch, self.context.img_size, self.context.in_chans, self.context.num_classes))
        except (GeneError, ValueError):
            return None

    def _draw(self, base: dict[str, Any] | None = None, rate: float = 1.0) -> tuple[dict, Architecture, float] | None:
        """One candidate: its Optuna parameters, genes and exact params; None when over ``max_params``."""
        draw = _DrawTrial(self._rng, base, rate)
        arch = self.context.space.suggest(draw)
        n = self._costs(arch)
        if n is None or (self.context.max_params is not None and n > self.context.max_params):
            return None
        return draw.params, arch, n

    def _keys(self, params: dict[str, Any], arch: Architecture | None) -> tuple[str, ...]:
        """What identifies a design: its Optuna parameters, and its canonical key at the deployment size
        (genes that build the same model, e.g. FNet at two head counts, share it)."""
        keys = ("params:" + repr(sorted(params.items())),)
        if arch is not None:
            try:
                keys += (arch.canonical_key(self.context.img_size),)
            except (GeneError, ValueError):
                pass
        return keys

    def _seen(self, trials: list[FrozenTrial]) -> set[str]:
        out: set[str] = set()
        for t in trials:
            arch = t.user_attrs.get("arch")
            try:
                out.update(self._keys(t.params, Architecture.from_dict(arch) if arch else None))
            except (GeneError, ValueError, TypeError):
                out.update(self._keys(t.params, None))
        return out

    def _candidates(self, front: list[FrozenTrial], trained: set[str]) -> list[tuple[dict, Architecture, float]]:
        """The pool of this proposal: the standing pool topped up with ``n_random`` fresh random candidates
        (at most ``4 * n_random`` draws, so a tight budget costs bounded time), mutants of the front and the
        presets; all within ``max_params``, none already in the study."""
        if self.context.candidates is not None:  # a finite space: its designs are the pool
            if not self._pool:
                self._pool = [c for p in self.context.candidates if (c := self._draw(p, rate=0.0)) is not None]
            return [c for c in self._pool if not trained.intersection(self._keys(c[0], c[1]))]
        fresh, draws = [], 0
        while len(fresh) < self.n_random and draws < 4 * self.n_random:
            draws += 1
            c = self._draw()
            if c is not None:
                fresh.append(c)
        self._pool = (self._pool + fresh)[-self.pool_size:]
        mutants = []
        for k in range(self.n_mutants if front else 0):
            c = self._draw(front[k % len(front)].params, rate=1 / 8)
            if c is not None:
                mutants.append(c)
        presets = [c for _, p in self.context.presets if (c := self._draw(p, rate=0.0)) is not None]
        out, seen = [], set(trained)
        for c in (*presets, *mutants, *self._pool):
            keys = self._keys(c[0], c[1])
            if not seen.intersection(keys):
                seen.update(keys)
                out.append(c)
        return out

    def oob_error(self, forest: Any, accuracy: np.ndarray) -> float:
        """The floor of the accuracy spread: the root-mean-square out-of-bag error of ``forest`` on the trained
        designs' ``accuracy`` (each design predicted by the trees that never saw it: how wrong the trees are
        together on a design, which their spread, how much they disagree, does not measure), and at least
        ``noise``. ``noise`` alone when ``calibrate`` is off or no design was left out of any tree.

        ``forest``: a fitted ``RandomForestRegressor`` (``oob_score=True``); ``accuracy``: shape ``(n,)``, the
        trained designs' accuracies (fraction, 0-1) it was fitted to. Returns accuracy units (fraction). Source:
        the out-of-bag estimate of Breiman, "Random forests", Machine Learning 45, 2001. Raises nothing."""
        if not self.calibrate:
            return self.noise
        oob = np.asarray(getattr(forest, "oob_prediction_", []), dtype=float).reshape(-1)
        ok = np.isfinite(oob)
        if len(oob) != len(accuracy) or not ok.any():
            return self.noise
        return max(self.noise, float(np.sqrt(np.mean((oob[ok] - accuracy[ok]) ** 2))))

    def score(self, done: list[FrozenTrial], candidates: list[tuple[dict, Architecture, float]]) -> dict[str, Any]:
        """Score ``candidates`` (Optuna parameters, genes, exact params) against the feasible front of ``done``.

        Returns ``{"ehvi", "mu", "sigma", "throughput", "dominated"}`` arrays, one entry per candidate
        (``dominated``: a trained feasible design has no more params, no less throughput and more accuracy
        than the candidate's optimistic ``mu + 3 sigma``), or ``{}`` when the study holds fewer than two
        trained designs with genes.
        """
        ctx, bounds = self.context, self.context.bounds
        feasible = [t for t in done if not is_infeasible(t) and "arch" in t.user_attrs]
        if len(feasible) < 2 or not candidates:
            return {}
        x_done = [features(Architecture.from_dict(t.user_attrs["arch"]), t.values[1], ctx.img_size) for t in feasible]
        trained = np.array([t.values[:3] for t in feasible], dtype=float)
        rows = [features(arch, n, ctx.img_size) for _, arch, n in candidates]
        params = np.array([n for _, _, n in candidates], dtype=float)
        predictor = ThroughputPredictor(min_points=2, seed=self._rng.randrange(2**31)).fit(x_done, trained[:, 2])
        tput = predictor.predict(rows)
        from sklearn.ensemble import RandomForestRegressor

        forest = RandomForestRegressor(n_estimators=64, min_samples_leaf=2, random_state=self._rng.randrange(2**31),
                                       oob_score=self.calibrate)
        forest.fit(np.asarray(x_done), trained[:, 0])
        per_tree = np.stack([tree.predict(np.asarray(rows)) for tree in forest.estimators_])
        mu, sigma = per_tree.mean(axis=0), np.maximum(per_tree.std(axis=0), self.oob_error(forest, trained[:, 0]))
        norm = np.array([bounds.normalise(list(v)) for v in trained])
        front = norm[objectives.nondominated_sort(-norm)[0]]
        lo, hi = bounds.bounds[0]
        scale = (hi - lo) or 1.0
        ehvi = np.zeros(len(candidates))
        for i in range(len(candidates)):
            _, p, t = bounds.normalise([hi, params[i], float(tput[i])])
            ehvi[i] = expected_improvement(front, (mu[i] - lo) / scale, sigma[i] / scale, p, t)
        optimistic = mu + 3 * sigma
        dominated = np.array([bool(np.any((trained[:, 1] <= params[i]) & (trained[:, 2] >= tput[i])
                                          & (trained[:, 0] > optimistic[i]))) for i in range(len(candidates))])
        return {"ehvi": ehvi, "mu": mu, "sigma": sigma, "throughput": tput, "dominated": dominated}

    def smallest(self, seen: list[FrozenTrial]) -> dict[str, Any]:
        """The Optuna parameters of the candidate of fewest params not yet ``seen`` (``{}``: none left)."""
        candidates = self._candidates([], self._seen(seen))
        if not candidates:
            return {}
        c = min(candidates, key=lambda c: c[2])
        self.last = {"params": c[2], "candidates": len(candidates), "smallest": True}
        return c[0]

    def random_candidate(self, seen: list[FrozenTrial]) -> dict[str, Any]:
        """The Optuna parameters of a candidate drawn uniformly among those not yet ``seen`` (``{}``: none left):
        the random start-up proposal of a finite space, which stays inside it."""
        candidates = self._candidates([], self._seen(seen))
        if not candidates:
            return {}
        c = candidates[self._rng.randrange(len(candidates))]
        self.last = {"params": c[2], "candidates": len(candidates), "random": True}
        return c[0]

    def propose(self, done: list[FrozenTrial], seen: list[FrozenTrial] | None = None) -> dict[str, Any]:
        """The Optuna parameters of the candidate with the largest expected hypervolume improvement over the
        feasible front of ``done`` (complete trials), leaving out designs already ``seen`` (every trial of the
        study, by parameters and by the model they build; default: ``done``) and those a trained design surely dominates (see
        :meth:`score`). When no candidate can improve the front (every improvement is 0), a random one of those
        left. ``{}`` (a random proposal) when the study holds too little to score or no candidate is left."""
        feasible = [t for t in done if not is_infeasible(t)]
        norm = np.array([self.context.bounds.normalise(list(t.values[:3])) for t in feasible])
        front = [feasible[int(i)] for i in objectives.nondominated_sort(-norm)[0]] if len(norm) else []
        candidates = self._candidates(front, self._seen(seen if seen is not None else done))
        s = self.score(done, candidates)
        if not s:
            return {}
        ok = ~s["dominated"]  # surely dominated on cost and accuracy: never proposed
        if self.context.min_throughput is not None:
            ok &= s["throughput"] >= self.context.min_throughput
        ehvi = np.where(ok, s["ehvi"], -1.0)
        i = int(np.argmax(ehvi))
        if ehvi[i] <= 1e-12:  # nothing can move the front: explore among what is not surely dominated
            pick = np.flatnonzero(ok)
            if not len(pick):
                return {}
            i = int(pick[self._rng.randrange(len(pick))])
        self.last = {"ehvi": float(s["ehvi"][i]), "params": candidates[i][2], "throughput": float(s["throughput"][i]),
                     "accuracy_mean": float(s["mu"][i]), "accuracy_std": float(s["sigma"][i]),
                     "candidates": len(candidates)}
        return candidates[i][0]
