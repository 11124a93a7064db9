"""Settings of a search: :class:`SearchConfig`, its validation, the sampler factory and the progress events.

Library errors name the setting (``trials``, ``sampler``, ...); the CLI maps settings to its flags.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import optuna

if TYPE_CHECKING:  # the settings load no search space (and so no torch) until a search runs
    from search_spaces import SearchSpace

from ..study import DEFAULT_STORAGE, StudyMeta

__all__ = ["option", "SAMPLERS", "DTYPES", "BUDGETS", "budget_violations", "SearchConfig", "SearchError", "TrialEvent",
           "make_sampler", "population_size", "GPThenNSGAII", "GP_HANDOVER"]

SAMPLERS: tuple[str, ...] = ("auto", "nsga2", "tpe", "random", "gp", "knowncost")
#: Most trials a packed search (``--gpus-per-trial auto``) puts on one GPU.
MAX_PER_GPU = 16
#: Complete trials after which ``--sampler auto`` hands over from GPSampler to NSGA-II.
GP_HANDOVER = 200
#: Complete trials of a search whose ``trials`` is left at None.
DEFAULT_TRIALS = 12
#: Early-stopping rules (as ``nas.engine.scheduler.SCHEDULERS``; kept here so settings load no Ray).
SCHEDULERS: tuple[str, ...] = ("pareto", "curve", "asha")
#: Inference dtypes of the deployment shape (as ``trainers.measure.DTYPES``; kept here so settings load no torch).
DTYPES: tuple[str, ...] = ("float32", "bfloat16")
#: Budget settings: name -> (objective or attribute it bounds, "max" or "min").
BUDGETS: dict[str, tuple[str, str]] = {"max_params": ("params", "max"), "min_throughput": ("throughput", "min"),
                                       "max_memory": ("peak_memory", "max")}


class SearchError(ValueError):
    """A search setting outside its allowed values (the message names the setting)."""


def option(default: Any, help: str, *, cli: bool = True, worker: bool = False, amount: bool = False,
           text: bool = False) -> Any:
    """One setting of :class:`SearchConfig`, declared once: its default and help text, whether ``vitnas search``
    offers it as an option (``cli``; the CLI's options are generated from these fields), whether a Ray worker's
    trial body reads it (``worker``: :meth:`SearchConfig.worker_settings`), and whether the CLI takes it as an
    amount with a suffix (``amount``: ``1.5M``, ``2GiB``)."""
    return field(default=default, metadata={"help": help, "cli": cli, "worker": worker, "amount": amount,
                                            "text": text})


@dataclass
class SearchConfig:
    """Settings of one search (the CLI options of ``vitnas search``).

    Attributes:
        study: study name (also the run folder name under ``run_dir``).
        trials: target number of complete trials in the study (>= 1). None (the default): 12, and when
            the presets run, the search also samples at least as many designs of its own as it runs presets
            (COMPLETE or PRUNED; the presets are a warm start, not the budget), even past 12. A number: that
            many complete trials, presets included (:attr:`target_trials`).
        epochs: proxy-training epochs per trial.
        dataset: ``digits``, ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100`` or ``imagefolder:PATH``.
        data_dir: folder of the torchvision data sets. download: allow torchvision to download.
        train_subset, val_subset: images per split used by the proxy (None: all).
        img_size: side in pixels the proxy's images are resized to (None: the data set's own), e.g. 16 to
            search Fashion-MNIST's 28 px images at a third of the tokens on a CPU. The study records it; a
            resumed study must use the same.
        storage: SQLAlchemy URL of the Optuna storage (default ``sqlite:///runs/vitnas.db``). Only the
            driver opens it; Ray workers never see it.
        sampler: ``knowncost`` (default: :class:`nas.engine.known_cost.KnownCostSampler`, chosen on the
            recorded table, docs/benchmarks.md), ``auto`` (Optuna's GPSampler for a study's first
            :data:`GP_HANDOVER` complete trials, NSGA-II after; see :class:`GPThenNSGAII`), ``nsga2``,
            ``tpe``, ``random`` or ``gp``;
            population_size: NSGA-II population (None: sized to the budget, between 4 and 50).
        seed: seeds the sampler and every trial's training.
        space: the search space (None: the default :class:`~search_spaces.SearchSpace`); config: a YAML/TOML
            file narrowing it.
        presets: the paper presets that lie in the space take part: under ``knowncost`` (the default) as
            candidates, trained only when their known costs can move the front; under the other samplers
            enqueued as the first trials (see ``trials``).
        cpus_per_trial, gpus_per_trial: Ray resources per trial (fractions allowed for GPUs).
        max_concurrent: trials at once (0: one per GPU share when GPUs are used, else 1 so CPU
            throughput is measured on an idle machine).
        address: Ray cluster address (``auto`` or ``host:port``); None starts a local Ray.
        run_dir: folder for run data (weights, Ray results); default ``runs``.
        timeout: wall-clock budget in seconds for this invocation (None: none).
        epoch_budget: compute budget of the study in proxy epochs (None: none): no trial is proposed once its
            trials have trained this many epochs in all (complete ones their epochs, early-stopped ones up to
            their rung, reused results none), even before ``trials`` complete ones.
        batch_size, lr: proxy-training batch size and peak learning rate.
        max_failures_per_arch: genes that failed this many times are failed at once when proposed again
            (with the earlier reason) instead of being trained again.
        target_img_size, target_batch, target_dtype: the deployment shape at which params, FLOPs,
            throughput and peak memory are measured (accuracy is the proxy's): image side in pixels (None:
            the data set's), batch (images), ``float32`` or ``bfloat16`` (None: bfloat16 on CUDA, else
            float32), on the trial's device. Fixed for a study's life.
        max_params, min_throughput, max_memory: budgets (None: none), Optuna constraints of every trial
            (``Trial.set_constraint``; NSGA-II, TPE and GP sample around them, the front holds feasible
            designs only): parameters, img/s and peak inference memory in bytes at the deployment shape.
        early_stopping: Pareto-aware successive halving (:class:`nas.engine.scheduler.ParetoASHA`): at rungs of
            ``grace_period * eta**k`` epochs a trial outside the first front and the top ``1/eta`` of the
            trials at that rung stops, and is recorded PRUNED (never on the front); it does not count
            towards ``trials``. grace_period: first rung (epochs); eta: reduction factor. scheduler:
            ``pareto`` (that rule, the default) or ``asha`` (Ray Tune's ASHA on accuracy alone,
            :class:`nas.engine.scheduler.AccuracyASHA`: the single-objective baseline).
        promote_at, promote_fronts, promote_gate: promotion at one synchronous rung (successive halving with pause and
            resume, arXiv 1810.05934): until ``promote_at`` of the epoch budget is spent, trials train
            ``epochs // 2`` epochs of the ``epochs``-epoch schedule and pause (COMPLETE with that rung's
            accuracy, user attribute ``paused_at``); then the paused trials' first ``promote_fronts``
            non-dominated fronts resume (new trials, ``resumed_from``), most accurate first; once they have
            ended, each other paused trial resumes unless even the ``promote_gate`` quantile of its predicted
            accuracy is dominated by a fully trained trial (0: no gate, they stay stopped); then the search
            goes on with full proxy runs. The paused trials leave the front once the promotion is recorded
            (:func:`nas.study.promotion`). Chosen on the recorded table (docs/benchmarks.md, "Promotion at one
            rung" and "Promotion with a gate").
        throughput_cache: keep throughput figures in ``run_dir/throughput_cache.sqlite`` (the reference
            calibrated once per device and shape; a model already timed is not timed again).
    """

    study: str = option("digits", "Study name (continues the study if it exists).", worker=True)
    trials: int | None = option(None, "Target number of complete trials in the study (default 12, and as many sampled "
                                      "designs as paper presets run).")
    epochs: int = option(6, "Proxy-training epochs per trial.", worker=True)
    dataset: str = option("digits", "digits, mnist, fashion_mnist, cifar10, cifar100 or imagefolder:PATH.")
    data_dir: str | None = option(None, "Folder of the torchvision data sets.")
    download: bool = option(False, "Let torchvision download a missing data set.")
    train_subset: int | None = option(None, "Training images used by the proxy (default: all).")
    val_subset: int | None = option(None, "Validation images used by the proxy (default: all).")
    img_size: int | None = option(None, "Resize the proxy's images to this side in px (default: the data set's own; "
                                        "e.g. 16 for Fashion-MNIST on a CPU).")
    storage: str = option(DEFAULT_STORAGE, "SQLAlchemy URL of the Optuna storage.")
    sampler: str = option("knowncost", "knowncost (expected hypervolume improvement where only accuracy is "
                                       "uncertain: params exact, throughput measured or predicted; the presets are "
                                       "trained only when their known costs can move the front), auto (GPSampler, "
                                       "then NSGA-II past 200 complete trials), nsga2, tpe, random or gp (Optuna's "
                                       "GPSampler).")
    population_size: int | None = option(None, "NSGA-II population (default: sized to --trials).")
    seed: int = option(0, "Seed of the sampler and of every trial.", worker=True)
    space: SearchSpace | None = option(None, "The search space (a notebook's SearchSpace; None: the default space; "
                                             "the CLI takes --config).", cli=False)
    config: str | None = option(None, "YAML or TOML file narrowing the gene domains.")
    presets: bool = option(True, "Let the paper presets take part: under knowncost as candidates trained when their "
                                 "known costs can move the front; under the other samplers enqueued as the first "
                                 "trials (with the default --trials, a warm start: as many sampled designs follow).")
    cpus_per_trial: float = option(1.0, "CPUs per trial (Ray resources).", worker=True)
    gpus_per_trial: float | str = option(
        "auto", "GPUs per trial: auto (on a CUDA cluster, trials share each GPU as the first trials' measured memory "
                "and busy fraction allow, up to 16; a trial that runs out of memory packed is retried alone; 0 on a "
                "machine without GPUs) or a number (fractions share a GPU).", text=True)
    max_concurrent: int = option(0, "Trials at once (0: one per GPU share, or 1 on CPU).")
    address: str | None = option(None, "Join a Ray cluster ('auto' or host:port).")
    run_dir: str = option("runs", "Folder for weights and Ray results.")
    artifact_store: str | None = option(None, "Optuna artifact store for the trained weights, reachable from every "
                                              "machine: a folder, file://PATH, s3://BUCKET or gs://BUCKET (default: "
                                              "RUN_DIR/artifacts).")
    timeout: float | None = option(None, "Wall-clock budget in seconds.")
    epoch_budget: int | None = option(None, "Compute budget of the study in proxy epochs (complete and early-stopped "
                                            "trials; reused results cost none).")
    batch_size: int = option(32, "Proxy-training batch (images).", cli=False, worker=True)
    lr: float = option(3e-3, "Proxy-training peak learning rate.", cli=False, worker=True)
    max_failures_per_arch: int = option(2, "Failures after which the same genes are refused.", cli=False)
    target_img_size: int | None = option(None, "Deployment image size (px) at which params, FLOPs, throughput and "
                                               "memory are measured (default: the data set's; accuracy is always the "
                                               "proxy's).", worker=True)
    target_batch: int = option(64, "Deployment batch (images) for throughput and memory.", worker=True)
    target_dtype: str | None = option(None, "Deployment dtype: float32 or bfloat16 (default: bfloat16 on CUDA, "
                                            "float32 on the CPU).", worker=True)
    max_params: float | None = option(None, "Budget: at most this many parameters (e.g. 1M).", amount=True, worker=True)
    min_throughput: float | None = option(None, "Budget: at least this many img/s (e.g. 2k).", amount=True, worker=True)
    max_memory: float | None = option(None, "Budget: at most this peak inference memory in bytes (e.g. 512MiB).",
                                      amount=True, worker=True)
    throughput_cache: bool = option(True, "Keep throughput figures in RUN_DIR/throughput_cache.sqlite (no model timed "
                                          "twice; the reference calibrated once).")
    early_stopping: bool = option(True, "Stop hopeless trials at rungs (Pareto-aware successive halving); they end "
                                        "PRUNED and do not count as --trials.")
    grace_period: int = option(1, "First rung of early stopping (epochs).")
    eta: int = option(3, "Early stopping keeps the first front and the top 1/eta at each rung.")
    scheduler: str = option("curve", "Early-stopping rule: curve (a trial stops only when even its optimistic "
                                     "predicted final accuracy is dominated by a fully trained trial; none stops "
                                     "before four trials finished), pareto (the objectives at each rung) or asha "
                                     "(Ray Tune's ASHA on accuracy alone, a baseline).")
    promote_at: float = option(0.33, "Promotion: for this fraction of the epoch budget (--epoch-budget, else --trials x "
                                     "--epochs) trials train half their epochs and pause; then the best "
                                     "--promote-fronts non-dominated fronts resume to the full proxy, most accurate "
                                     "first (0: off; needs --epochs >= 2).")
    promote_fronts: int = option(1, "Promotion: how many non-dominated fronts of the paused trials resume first (1: "
                                    "the Pareto front).")
    promote_gate: float = option(0.999, "Promotion: once those have resumed, each other paused trial resumes unless "
                                        "even this quantile of its predicted accuracy (a line fitted on the resumed "
                                        "trials' rung and final accuracies) is dominated by a fully trained trial "
                                        "(0: they stay stopped).")

    def validate(self) -> None:
        """Raise :class:`SearchError` naming the first setting outside its allowed values."""
        def positive_int(name: str, value: Any, minimum: int = 1) -> None:
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise SearchError(f"{name}: must be an integer >= {minimum}, got {value!r}")

        if self.trials is not None:
            positive_int("trials", self.trials)
        positive_int("epochs", self.epochs)
        positive_int("batch_size", self.batch_size)
        positive_int("max_concurrent", self.max_concurrent, 0)
        bad_name = any(c in self.study for c in "/\\\0") if isinstance(self.study, str) else True
        if not self.study or bad_name or self.study.startswith("."):
            raise SearchError(f"study: {self.study!r} is not a usable name; use letters, digits, '-' and '_'")
        if self.sampler not in SAMPLERS:
            raise SearchError(f"sampler: unknown value {self.sampler!r}; allowed: {', '.join(SAMPLERS)}")
        if self.population_size is not None:
            positive_int("population_size", self.population_size, 2)
        for name in ("train_subset", "val_subset"):
            if getattr(self, name) is not None:
                positive_int(name, getattr(self, name))
        def finite(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        if not (finite(self.cpus_per_trial) and self.cpus_per_trial > 0):
            raise SearchError(f"cpus_per_trial: must be > 0, got {self.cpus_per_trial!r}")
        if isinstance(self.gpus_per_trial, str) and self.gpus_per_trial != "auto":
            try:
                self.gpus_per_trial = float(self.gpus_per_trial)
            except ValueError:
                raise SearchError(f"gpus_per_trial: must be auto or a number >= 0, got {self.gpus_per_trial!r}") from None
        if self.gpus_per_trial == "auto":
            pass
        elif not (finite(self.gpus_per_trial) and self.gpus_per_trial >= 0):
            raise SearchError(f"gpus_per_trial: must be auto or a number >= 0 (fractions allowed), "
                              f"got {self.gpus_per_trial!r}")
        elif self.gpus_per_trial > 1 and self.gpus_per_trial != int(self.gpus_per_trial):
            raise SearchError(f"gpus_per_trial: above 1 it must be a whole number, got {self.gpus_per_trial!r}")
        if self.epoch_budget is not None:
            positive_int("epoch_budget", self.epoch_budget)
        if self.timeout is not None and not (finite(self.timeout) and self.timeout > 0):
            raise SearchError(f"timeout: must be a positive number of seconds, got {self.timeout!r}")
        if not (finite(self.lr) and self.lr > 0):
            raise SearchError(f"lr: must be a positive number, got {self.lr!r}")
        positive_int("max_failures_per_arch", self.max_failures_per_arch)
        for name in ("img_size", "target_img_size"):
            if getattr(self, name) is not None:
                positive_int(name, getattr(self, name))
                if getattr(self, name) > 4096:
                    raise SearchError(f"{name}: must be at most 4096 pixels, got {getattr(self, name)!r}")
        positive_int("grace_period", self.grace_period)
        positive_int("eta", self.eta, 2)
        if self.scheduler not in SCHEDULERS:
            raise SearchError(f"scheduler: unknown value {self.scheduler!r}; allowed: {', '.join(SCHEDULERS)}")
        if not (finite(self.promote_at) and 0 <= self.promote_at < 1):
            raise SearchError(f"promote_at: must be a fraction in [0, 1) of the epoch budget (0: no promotion), "
                              f"got {self.promote_at!r}")
        positive_int("promote_fronts", self.promote_fronts)
        if not (finite(self.promote_gate) and (self.promote_gate == 0 or 0.5 < self.promote_gate < 1)):
            raise SearchError(f"promote_gate: must be 0 (no gate) or a quantile in (0.5, 1), got {self.promote_gate!r}")
        positive_int("target_batch", self.target_batch)
        if self.target_batch > 65536:
            raise SearchError(f"target_batch: must be at most 65536 images, got {self.target_batch!r}")
        if self.target_dtype is not None and self.target_dtype not in DTYPES:
            raise SearchError(f"target_dtype: unknown value {self.target_dtype!r}; allowed: {', '.join(DTYPES)}")
        for name in BUDGETS:
            value = getattr(self, name)
            if value is not None and not (finite(value) and value > 0):
                raise SearchError(f"{name}: must be a positive number, got {value!r}")

    @property
    def target_trials(self) -> int:
        """Complete trials the study should hold: ``trials``, or :data:`DEFAULT_TRIALS` when it is None."""
        return DEFAULT_TRIALS if self.trials is None else self.trials

    @property
    def rung_epochs(self) -> int | None:
        """Epochs a trial trains before it pauses at the promotion rung (half the proxy's, ``epochs // 2``), or
        None when there is no promotion (``promote_at`` 0, or a 1-epoch proxy)."""
        return self.epochs // 2 if self.promote_at and self.epochs >= 2 else None

    @property
    def promote_after(self) -> float | None:
        """Proxy epochs spent on paused trials before the promotion: ``promote_at`` of ``epoch_budget``, or of
        ``target_trials * epochs`` without one (None: no promotion)."""
        if self.rung_epochs is None:
            return None
        return self.promote_at * (self.epoch_budget or self.target_trials * self.epochs)

    @property
    def warm_start(self) -> bool:
        """Whether the presets are a warm start the sampler must match design for design (``trials`` left
        at its default, presets on)."""
        return self.presets and self.trials is None

    def packed(self, gpus: float) -> bool:
        """Whether trials are packed per GPU by :class:`nas.engine.packing.PackingPlan`: ``gpus_per_trial`` is
        ``auto`` and the cluster has ``gpus`` > 0."""
        return self.gpus_per_trial == "auto" and gpus > 0

    def resolved_gpus_per_trial(self, gpus: float) -> float:
        """The fixed GPU share of a trial: ``gpus_per_trial``, or with ``auto`` 0 on a cluster without GPUs
        (a packed search's shares come from its plan, one per trial)."""
        if self.gpus_per_trial == "auto":
            return 1.0 if gpus > 0 else 0.0
        return float(self.gpus_per_trial)

    def resolved_max_concurrent(self, gpus: float = 1.0) -> int:
        """Trials at once: ``max_concurrent`` if given; else, packed (``auto`` on GPUs), up to
        :data:`MAX_PER_GPU` per GPU (Ray starts each when its share is free); else one per GPU share of the
        ``gpus`` GPUs in the cluster when trials use GPUs; else 1 (CPU throughput is measured on an idle
        machine)."""
        if self.max_concurrent:
            return self.max_concurrent
        if self.packed(gpus):
            return max(1, int(gpus * MAX_PER_GPU))
        if self.gpus_per_trial != "auto" and self.gpus_per_trial > 0:
            return max(1, int(max(gpus, 1.0) / self.gpus_per_trial + 1e-9))
        return 1

    def worker_settings(self) -> dict[str, Any]:
        """The plain, picklable settings a Ray worker's trial body reads (:func:`nas.engine.trial.run_trial`):
        the fields declared with ``worker=True``, the run folder resolved and the throughput cache's path.

        Deliberately without the storage URL: workers compute and report; only the driver writes the study.
        """
        from pathlib import Path

        run_dir = Path(self.run_dir).resolve()
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("worker")}
        return {**out, "run_dir": str(run_dir), "artifact_store": self.artifact_store or str(run_dir / "artifacts"),
                "cache_path": str(run_dir / "throughput_cache.sqlite") if self.throughput_cache else None}

    def target(self, img_size: int) -> dict[str, Any]:
        """The deployment shape as the study stores it (``img_size`` is the data set's)."""
        return {"img_size": self.target_img_size or img_size, "batch": self.target_batch,
                "dtype": self.target_dtype or "auto"}

    def study_meta(self, data: Any, space: SearchSpace) -> StudyMeta:
        """The study record (:class:`nas.study.StudyMeta`) of a search with these settings on ``data`` (an
        ``ImageData``) over ``space``; its derived field ``hv_bounds`` is filled in when the study is created."""
        return StudyMeta(
            dataset=self.dataset, img_size=data.img_size, in_chans=data.in_chans, num_classes=data.num_classes,
            epochs=self.epochs, train_subset=self.train_subset, val_subset=self.val_subset,
            batch_size=self.batch_size, lr=self.lr, target=self.target(data.img_size), budgets=self.budgets(),
            space=space.to_dict(), population_size=population_size(self.target_trials, self.population_size),
            data_config={k: list(v) if isinstance(v, tuple) else v for k, v in data.data_config().items()})

    def budgets(self) -> dict[str, float]:
        """The budgets that are set, by setting name (``max_params``: 1e6, ...)."""
        return {name: float(getattr(self, name)) for name in BUDGETS if getattr(self, name) is not None}


def budget_violations(budgets: dict[str, float], measured: dict[str, Any], known_only: bool = False
                      ) -> dict[str, float]:
    """Relative violation of each budget by ``measured`` (objective values and ``peak_memory``): > 0 breaks
    it by that fraction of the budget (``params`` 1.2e6 against ``max_params`` 1e6: 0.2), <= 0 meets it.
    These are the values stored with ``Trial.set_constraint`` (one per budget, named by the setting), so
    violations in different units compare. A missing measurement counts as a violation of 1, or, with
    ``known_only`` (a design screened before it is measured), as 0: not known to break the budget.
    """
    out = {}
    for name, limit in budgets.items():
        attr, kind = BUDGETS[name]
        value = measured.get(attr)
        if value is None or not math.isfinite(float(value)):
            out[name] = 0.0 if known_only else 1.0
        else:
            out[name] = float(value) / limit - 1.0 if kind == "max" else 1.0 - float(value) / limit
    return out


def population_size(trials: int, given: int | None = None) -> int:
    """NSGA-II's population: ``given``, else sized to the budget (``trials // 3`` clamped to [4, 50]), so a
    small search runs several generations instead of one random one."""
    return given or max(4, min(50, trials // 3))


class GPThenNSGAII(optuna.samplers.BaseSampler):
    """``--sampler auto`` (vitnas' default before the recorded table): Optuna's GPSampler while the study
    holds fewer than ``handover`` complete trials, NSGA-II from then on.

    Chosen by measurement (docs/benchmarks.md): at 72 proxy epochs (5 seeds) GPSampler with the paper
    presets and Pareto-aware early stopping reached 1.14x random search's hypervolume on Fashion-MNIST
    (ahead of NSGA-II, MO-TPE, GPSampler alone, ASHA on accuracy and MOASHA) and 1.16x on digits, where
    NSGA-II with the same reached 0.98x; but a GPSampler proposal costs 1.5 s at 100 complete trials and 6.7 s at 1,000
    (section "Sampler cost"), while NSGA-II's stays under 0.01 s at 9,000. Each trial is handled by one
    sampler from ``before_trial`` to ``after_trial``; once handed over, a sampler instance stays with
    NSGA-II (whose first generation after the hand-over is random, as NSGA-II's always is).

    ``gp`` and ``nsga2`` are the two samplers (as :func:`make_sampler` builds them for ``gp`` and
    ``nsga2``); ``handover``: complete trials at which NSGA-II takes over. Raises nothing itself; the
    wrapped samplers raise what Optuna's do. Sources: Optuna's ``GPSampler`` (log expected hypervolume
    improvement, Ament et al., arXiv:2310.20708) and ``NSGAIISampler`` (Deb et al., IEEE TEC 6(2), 2002).
    """

    def __init__(self, gp: optuna.samplers.BaseSampler, nsga2: optuna.samplers.BaseSampler,
                 handover: int = GP_HANDOVER):
        self.gp, self.nsga2 = gp, nsga2
        self.handover = handover
        self.handed_over = False
        self._by_trial: dict[int, optuna.samplers.BaseSampler] = {}

    def _current(self, study: optuna.Study) -> optuna.samplers.BaseSampler:
        if not self.handed_over:
            complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            self.handed_over = len(complete) >= self.handover
        return self.nsga2 if self.handed_over else self.gp

    def _for(self, trial: optuna.trial.FrozenTrial) -> optuna.samplers.BaseSampler:
        return self._by_trial.get(trial.number) or (self.nsga2 if self.handed_over else self.gp)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        sampler = self._by_trial[trial.number] = self._current(study)
        sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                        search_space: dict[str, Any]) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str,
                           param_distribution: Any) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: optuna.trial.TrialState,
                    values: Any) -> None:
        sampler = self._by_trial.pop(trial.number, None) or self._for(trial)
        sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.gp.reseed_rng()
        self.nsga2.reseed_rng()


def make_sampler(name: str, seed: int, trials: int, population: int | None = None,
                 context: Any = None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for ``name``.

    NSGA-II's population: :func:`population_size`. TPE is Optuna's multi-objective TPE with the constant
    liar for concurrent trials. ``gp`` is Optuna's GPSampler (Gaussian-process Bayesian optimisation,
    log expected hypervolume improvement for several objectives) after ``min(10, max(2, trials // 3))``
    random start-up trials; genes outside its intersection search space (per-head and per-mechanism genes)
    are sampled at random.

    ``auto`` (the former default) is :class:`GPThenNSGAII` with these GPSampler and NSGA-II settings.

    ``knowncost`` is :class:`nas.engine.known_cost.KnownCostSampler`; it needs ``context``
    (:class:`nas.engine.known_cost.CostContext`: the space, the deployment shape, the bounds and budgets).

    Raises:
        SearchError: unknown sampler name, or ``knowncost`` without a ``context``.
    """
    if name == "knowncost":
        if context is None:
            raise SearchError("sampler: knowncost needs the study's cost context (space, deployment shape, bounds)")
        from .known_cost import KnownCostSampler

        return KnownCostSampler(context, seed=seed)  # the smallest, then random until 2 trained; then EHVI
    if name == "auto":
        return GPThenNSGAII(make_sampler("gp", seed, trials), make_sampler("nsga2", seed, trials, population))
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=population_size(trials, population), seed=seed)
    if name == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                              n_startup_trials=5)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":  # multi-objective: log expected hypervolume improvement; needs torch and scipy
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=min(10, max(2, trials // 3)),
                                             warn_independent_sampling=False)
    raise SearchError(f"sampler: unknown value {name!r}; allowed: {', '.join(SAMPLERS)}")


@dataclass
class TrialEvent:
    """What the search tells its progress callback.

    ``kind``: ``start``, ``epoch``, ``complete``, ``fail``, ``pruned`` (stopped early by the scheduler at a
    rung; ``metrics["epoch"]`` says where), ``refused`` (its measured costs broke a budget before training;
    ``metrics["refused"]``: budget -> violation), ``stopped`` (cut off by the time budget), ``stalled`` (the
    search gave up: every proposal failed) or ``promoted`` (the promotion at the rung; ``metrics``: the
    stored record, ``reason``: it in words). A trial paused at the rung ends ``complete`` with
    ``metrics["paused_at"]``. ``metrics`` holds the epoch's or the final
    figures; ``reason`` a failure's reason.
    """

    kind: str
    number: int
    arch: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
