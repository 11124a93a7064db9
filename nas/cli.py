"""``vitnas``: the command line, a thin layer over :mod:`nas`, :mod:`search_spaces` and :mod:`dashboards`.

Every error a user can cause (bad option values, genes, config files, storage, study or trial) is one
line on stderr and exit status 2; nothing already stored is changed by a refused command.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .study import DEFAULT_STORAGE, OBJECTIVES

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="vitnas: multi-objective architecture search for efficient vision transformers.")
console = Console()
err_console = Console(stderr=True)

# Options several commands share.
StudyName = Annotated[str, typer.Option(help="Study name.")]
StorageURL = Annotated[str, typer.Option(help="SQLAlchemy URL of the Optuna storage.")]
JSONFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


#: The packages whose versions ``vitnas --version`` prints (distribution names).
VERSIONED = ("vitnas", "torch", "torchvision", "timm", "optuna", "ray", "sqlalchemy", "numpy")
#: Distributions a failure may come from, by their top-level module (a failure inside one is named, not traced).
DEPENDENCIES = {"torch": "torch", "torchvision": "torchvision", "timm": "timm", "optuna": "optuna", "ray": "ray",
                "sqlalchemy": "sqlalchemy", "fvcore": "fvcore", "plotly": "plotly", "safetensors": "safetensors",
                "sklearn": "scikit-learn", "numpy": "numpy", "yaml": "pyyaml", "rich": "rich", "typer": "typer",
                "scipy": "scipy", "pandas": "pandas"}


def versions() -> dict[str, str]:
    """Installed versions of :data:`VERSIONED` (``"not installed"`` where missing), read from the package
    metadata without importing the packages (so ``vitnas --version`` loads no torch)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _version_callback(value: bool) -> None:
    if value:
        sys.stdout.write("  ".join(f"{name} {v}" for name, v in versions().items()) + "\n")
        raise typer.Exit(0)


def _debug_callback(value: bool) -> None:
    if value:
        import os

        os.environ["VITNAS_DEBUG"] = "1"


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_version_callback,
                                          help="Print the versions of vitnas, torch, timm, optuna and ray, and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", is_eager=True, callback=_debug_callback,
                                        help="Show the full traceback of a failure inside a dependency "
                                             "(also: VITNAS_DEBUG=1).")] = False,
) -> None:
    """vitnas: multi-objective architecture search for efficient vision transformers."""


def dependency_failure(exc: BaseException) -> str | None:
    """One line naming the installed package a failure came from, its version and where to report it, or None
    when the innermost frame of the failure is not inside one of :data:`DEPENDENCIES`.

    Read from the traceback's innermost frame and the package's metadata (``Project-URL`` issues or bug
    tracker, else its home page).
    """
    import traceback
    from importlib.metadata import PackageNotFoundError, metadata

    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        parts = frame.filename.replace("\\", "/").split("/")
        if "site-packages" not in parts and "dist-packages" not in parts:
            if any(p in ("nas", "search_spaces", "trainers", "dashboards") for p in parts[-2:-1]):
                return None  # the failure is vitnas' own
            continue
        top = parts[max(i for i, p in enumerate(parts) if p in ("site-packages", "dist-packages")) + 1]
        dist = DEPENDENCIES.get(top)
        if dist is None:
            continue
        try:
            meta = metadata(dist)
        except PackageNotFoundError:
            return None
        urls = {u.split(",", 1)[0].strip().lower(): u.split(",", 1)[1].strip() for u in meta.get_all("Project-URL") or []
                if "," in u}
        where = next((v for k, v in urls.items() if any(w in k for w in ("issue", "bug", "tracker"))), None) \
            or urls.get("source") or urls.get("homepage") or meta.get("Home-page") or "the package's tracker"
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        inside = "/".join(parts[parts.index(top):])
        return (f"{exc.__class__.__name__}{': ' + message if message else ''} (inside {dist} {meta['Version']}, "
                f"{inside}:{frame.lineno}); report it with the output of `vitnas --version` to {where} or to vitnas; "
                "--debug or VITNAS_DEBUG=1 shows the traceback")
    return None


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def _fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _guard(fn, *args, **kwargs):
    """Run ``fn``; a ValueError (every vitnas input error is one) becomes one line and exit 2."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return fn(*args, **kwargs)
    except ValueError as exc:
        _fail(str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__)
    except SQLAlchemyError as exc:  # locked, corrupted or vanished storage while reading or writing
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        _fail(f"storage: {detail} (nothing was changed)")


_SUFFIXES = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "kib": 2.0**10, "mib": 2.0**20, "gib": 2.0**30,
             "tib": 2.0**40, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "b": 1.0}


def _amount(field: str, text: str | None) -> float | None:
    """``"1.5M"`` -> 1.5e6, ``"2GiB"`` -> 2 ** 31 (decimal k/M/G/T, binary KiB/MiB/GiB/TiB, a trailing B
    allowed); None stays None.

    Raises:
        ValueError: not a positive number with one of those suffixes (names ``field``).
    """
    if text is None:
        return None
    import re

    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else None
    if not match or unit not in _SUFFIXES or not float(match.group(1)) > 0:
        raise ValueError(f"{field}: {text!r} is not a positive amount; give a number, optionally with k, M, G "
                         "(or KiB, MiB, GiB for memory), e.g. 1.5M or 2GiB")
    return float(match.group(1)) * _SUFFIXES[unit]


def _fmt_int(v: Any) -> str:
    return f"{int(v):,}" if v is not None else "-"


def _front_table(records: list[dict[str, Any]], title: str) -> Table:
    from . import objectives
    from .study import describe_arch

    spec = objectives.spec()
    confirmed = any(r.get("confirmed") for r in records)
    table = Table(title=escape(title), title_justify="left")
    columns = [("trial", "right"), ("preset / note", "left"), *((o.header, "right") for o in spec)]
    if confirmed:  # the proxy's accuracy stays in its column; the confirmed one beside it
        columns.insert(3, ("confirmed (mean ± std, seeds)", "right"))
    for name, justify in (*columns, ("FLOPs", "right"), ("genes", "left")):
        table.add_column(name, justify=justify)
    for r in records:
        note = r.get("preset") or (f"= trial {r['reused_from']}" if r.get("reused_from") is not None else "")
        cells = [o.format(r.get(o.name)) for o in spec]
        if confirmed:
            c = r.get("confirmed")
            cells.insert(1, f"{c['mean']:.4f} ± {c['std']:.4f} ({c['seeds']})" if c else "proxy only")
        table.add_row(str(r["trial"]), escape(str(note)), *cells, _fmt_int(r.get("flops")),
                      escape(describe_arch({"arch": r.get("arch")})))
    return table


def _separation_notes(records: list[dict[str, Any]]) -> None:
    """Under a front with confirmed designs: which confirmed designs the noise does not separate
    (:func:`nas.study.not_separated`: the 95% interval of the difference of their means contains 0)."""
    from .study.front import not_separated

    confirmed = [r for r in records if r.get("confirmed")]
    if not confirmed:
        return
    console.print(f"accuracy: {len(confirmed)} design(s) confirmed by vitnas retrain (their confirmed mean places "
                  "them on the front); the others by the proxy only", highlight=False, markup=False)
    pairs = [(a["trial"], b["trial"]) for i, a in enumerate(confirmed) for b in confirmed[i + 1:]
             if not_separated(a["confirmed"], b["confirmed"])]
    for a, b in pairs:
        console.print(f"  trials {a} and {b}: not separated by the noise (the 95% interval of the difference of "
                      "their confirmed means contains 0)", highlight=False, markup=False)


def _pruning_note(st: Any, epochs: int) -> None:
    """How many trials early stopping cut and the proxy epochs that saved."""
    from optuna.trial import TrialState

    from .study import trained_epochs

    pruned = st.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    if not pruned:
        return
    trained = sum(trained_epochs(t.state, t.user_attrs) for t in st.get_trials(deepcopy=False))
    saved = sum(max(0, epochs - int(t.user_attrs.get("pruned_at_epoch", epochs))) for t in pruned)
    console.print(f"early stopping: {len(pruned)} trial(s) stopped at a rung (PRUNED, not on the front), "
                  f"saving {saved} of {saved + trained} proxy epochs ({100 * saved / max(saved + trained, 1):.0f}%)",
                  highlight=False, markup=False)


def _warm_start_note(st: Any, sampler: str) -> None:
    """How many trials were paper presets and how many designs the sampler proposed."""
    from optuna.trial import TrialState

    ended = [t for t in st.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    presets = sum(1 for t in ended if t.user_attrs.get("preset"))
    if presets and sampler == "knowncost":  # not a warm start: presets were candidates, trained by their costs
        console.print(f"presets: {presets} paper preset(s) were worth training by their known costs, among "
                      f"{len(ended)} designs", highlight=False, markup=False)
    elif presets:
        by = sampler
        if sampler == "auto":  # name the sampler behind each design: NSGA-II marks the trials it handles
            from .study.optuna_adapter import sampled_by_nsga2

            nsga2 = sum(1 for t in ended if not t.user_attrs.get("preset") and sampled_by_nsga2(t))
            by = f"auto (GPSampler: {len(ended) - presets - nsga2}, NSGA-II: {nsga2})"
        console.print(f"warm start: {presets} paper preset(s), then {len(ended) - presets} design(s) sampled "
                      f"by {by}", highlight=False, markup=False)


def _shape_notes(st: Any, trials: list | None = None) -> None:
    """Under a front: which shape each figure belongs to, the budgets and the trials that break them."""
    from optuna.trial import TrialState

    from .study import describe_shape, is_infeasible, target_shape

    trials = trials if trials is not None else st.get_trials(deepcopy=False)
    console.print(f"accuracy: proxy at {st.user_attrs.get('img_size')} px; params, FLOPs, throughput: deployment "
                  f"shape {describe_shape(target_shape(st))}", highlight=False, markup=False)
    budgets = st.user_attrs.get("budgets") or {}
    if not budgets:
        return
    bad = [t for t in trials if t.state == TrialState.COMPLETE and is_infeasible(t)]
    refused = [t for t in bad if t.user_attrs.get("refused")]
    bad = [t for t in bad if not t.user_attrs.get("refused")]
    console.print("budgets: " + ", ".join(f"{k} {v:,.6g}" for k, v in budgets.items())
                  + f"; the front holds feasible designs only; {len(refused)} proposal(s) refused before training "
                  f"(0 epochs), {len(bad)} trained trial(s) break a budget", highlight=False, markup=False)
    for t in bad[:10]:
        over = t.user_attrs.get("budget_violations") or {k: v for k, v in t.constraints.items() if v > 0}
        console.print(f"  trial {t.number}: " + ", ".join(f"{k} off by {100 * v:.0f}%" for k, v in over.items()),
                      highlight=False, markup=False)
    if len(bad) > 10:
        console.print(f"  ... and {len(bad) - 10} more", highlight=False, markup=False)


def _search(**options: Any) -> None:
    """Run (or continue) a multi-objective search and print the Pareto front."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from . import objectives
    from .engine.search import SearchConfig, TrialEvent, run_search
    from .study import display_url, front_records, load_study

    amounts = {f.name for f in dataclasses.fields(SearchConfig) if f.metadata.get("amount")}
    cfg = SearchConfig(**{k: _guard(_amount, k, v) if k in amounts else v for k, v in options.items()})
    study, storage, dataset, epochs = cfg.study, cfg.storage, cfg.dataset, cfg.epochs
    _guard(cfg.validate)
    console.print(f"[bold]vitnas search[/] study [cyan]{escape(study)}[/] on [cyan]{escape(dataset)}[/] -> "
                  f"{escape(display_url(storage))}",
                  highlight=False)
    progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, transient=False)
    task = progress.add_task("trials", total=cfg.target_trials)

    opened: dict[str, Any] = {}

    def done_count() -> int:
        """Complete trials, read through one storage connection kept for the whole search."""
        from optuna.trial import TrialState

        try:
            if "study" not in opened:
                opened["study"] = load_study(storage, study)
            return sum(1 for t in opened["study"].get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                       if not t.user_attrs.get("refused") and not t.user_attrs.get("paused_at"))
        except ValueError:
            return 0

    def on_event(ev: TrialEvent) -> None:
        if ev.kind == "start":
            progress.update(task, description=f"trial {ev.number}: {escape(str(ev.arch))}")
        elif ev.kind == "epoch":
            progress.update(task, description=f"trial {ev.number} epoch {ev.metrics.get('epoch')}: "
                                              f"val acc {ev.metrics.get('val_accuracy', 0):.3f}")
        elif ev.kind == "complete":
            m = ev.metrics
            reused = f" (reused trial {m['reused_from']})" if m.get("reused_from") is not None else ""
            measured = "  ".join(o.brief(m.get(o.name)) for o in objectives.spec())
            paused = f" paused at epoch {m['paused_at']}" if m.get("paused_at") else ""
            progress.console.print(f"  [green]trial {ev.number:>3}[/]{paused} {escape(measured)}  {escape(str(ev.arch))}"
                                   f"{reused}", highlight=False)
            progress.update(task, completed=done_count())
        elif ev.kind == "pruned":
            m = ev.metrics
            progress.console.print(f"  [yellow]trial {ev.number:>3} stopped early[/] at epoch {m.get('epoch')} "
                                   f"(val acc {m.get('val_accuracy') or 0:.4f}, off the rung's front)  "
                                   f"{escape(str(ev.arch))}", highlight=False)
        elif ev.kind == "refused":
            m = ev.metrics
            broken = ", ".join(f"{k} by {100 * v:.0f}%" for k, v in (m.get("refused") or {}).items())
            progress.console.print(f"  [yellow]trial {ev.number:>3} refused[/] before training: breaks {escape(broken)}  "
                                   f"{escape(str(ev.arch))}", highlight=False)
        elif ev.kind == "stopped":
            progress.console.print(f"  [yellow]trial {ev.number:>3} stopped[/] by the time budget  {escape(str(ev.arch))}",
                                   highlight=False)
        elif ev.kind == "promoted":
            progress.console.print(f"  [cyan]{escape(str(ev.reason))}[/]", highlight=False)
        elif ev.kind == "stalled":
            progress.console.print(f"  [yellow]stopped:[/] {escape(str(ev.reason))}", highlight=False)
        elif ev.kind == "fail":
            reason = ev.reason
            if not reason and done_count() >= 0 and "study" in opened:
                reason = next((t.user_attrs.get("fail_reason", "") for t in opened["study"].get_trials(deepcopy=False)
                               if t.number == ev.number), "")
            progress.console.print(f"  [red]trial {ev.number:>3} failed[/]: {escape(str(reason or 'see the Ray logs'))}  "
                                   f"{escape(str(ev.arch))}",
                                   highlight=False)

    try:
        with progress:
            progress.update(task, completed=done_count())
            result = _guard(run_search, cfg, progress=on_event)
            progress.update(task, completed=done_count(), description="done")
    except KeyboardInterrupt:  # Ctrl-C: run_search stopped the trials and Ray, and kept what finished
        kept = done_count()
        err_console.print(f"interrupted: study {study} keeps {kept} complete trial(s); running trials were marked "
                          "'interrupted'. Run the same command again to continue.", highlight=False, markup=False)
        raise typer.Exit(130) from None
    records = front_records(result)
    console.print(_front_table(records, f"Pareto front of {study} ({len(records)} of "
                                        f"{len(result.get_trials(deepcopy=False))} trials)"))
    _shape_notes(result)
    _warm_start_note(result, cfg.sampler)
    _pruning_note(result, epochs)


def _search_signature() -> inspect.Signature:
    """The options of ``vitnas search``, generated from :class:`nas.engine.settings.SearchConfig`'s fields (their
    defaults and help text are declared once, there): every field declared with ``cli=True``, an amount
    (``amount=True``, e.g. ``--max-params 1M``) taken as text."""
    from .engine.settings import SearchConfig

    params = []
    for f in dataclasses.fields(SearchConfig):
        if not f.metadata.get("cli"):
            continue
        kind = ((str | None) if f.metadata.get("amount") else str if f.metadata.get("text")
                else eval(f.type, {}))  # noqa: S307 - "int | None" etc.
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                        annotation=Annotated[kind, typer.Option(help=f.metadata["help"])]))
    return inspect.Signature(params, return_annotation=None)


_search.__signature__ = _search_signature()  # type: ignore[attr-defined]
app.command(name="search")(_search)


@app.command()
def pareto(study: StudyName, storage: StorageURL = DEFAULT_STORAGE, as_json: JSONFlag = False) -> None:
    """Print the Pareto front of a study (accuracy, params, throughput: see nas.objectives)."""
    from .study import front_records, load_study, nonfinite_trials

    st = _guard(load_study, storage, study)
    records = _guard(front_records, st)
    if as_json:
        return _print_json(records)
    trials = st.get_trials(deepcopy=False)
    console.print(_front_table(records, f"Pareto front of {study} ({len(records)} of {len(trials)} trials)"))
    _separation_notes(records)
    _shape_notes(st, trials)
    left_out = [t.number for t in nonfinite_trials(trials)]
    if left_out:
        console.print(f"note: {len(left_out)} complete trial(s) with an infinite or NaN objective value left out "
                      f"of the front: {', '.join(map(str, left_out))}", highlight=False, markup=False)


@app.command()
def export(
    study: StudyName,
    trial: int | None = typer.Option(None, help="Trial number to export."),
    pick: str | None = typer.Option(None, help="Pick from the front instead: knee or an objective ("
                                                  + ", ".join(OBJECTIVES) + ")."),
    out: str = typer.Option(..., help="New folder for the timm model."),
    storage: StorageURL = DEFAULT_STORAGE,
) -> None:
    """Export a trained trial as a timm model folder (timm.create_model('local-dir:OUT'))."""
    from . import objectives
    from .export import export_trial
    from .study import load_study, pick_trial

    picks = ("knee", *objectives.names())
    if (trial is None) == (pick is None):
        _fail(f"trial: give exactly one of --trial N or --pick {'|'.join(picks)}")
    if pick is not None:
        if pick not in picks:
            _fail(f"pick: unknown value {pick!r}; allowed: {', '.join(picks)}")

        def choose() -> tuple[int, str]:
            from .study import front_records

            st = load_study(storage, study)
            number = pick_trial(st, pick).number
            front = front_records(st)
            confirmed = sum(1 for r in front if r["confirmed"])
            mine = next((r["front_by"] for r in front if r["trial"] == number), "proxy")
            if not confirmed:
                return number, "from the proxy's accuracies"
            return number, (f"from a front of {confirmed} confirmed and {len(front) - confirmed} proxy-only "
                            f"accuracies; this design's is the {mine} one")

        trial, used = _guard(choose)
        console.print(f"picked trial {trial} ({pick}, {used})", highlight=False)
    path = _guard(export_trial, storage, study, trial, out)
    console.print(f"exported trial {trial} of {escape(study)} to [cyan]{escape(str(path))}[/]: "
                  f"import search_spaces, timm; timm.create_model('local-dir:{escape(str(path))}')", highlight=False)


@app.command()
def retrain(
    study: StudyName = "digits",
    trials: str | None = typer.Option(None, help="Trial numbers to confirm, comma-separated (e.g. 3,7,12)."),
    top: int | None = typer.Option(None, help="Confirm the front's TOP most accurate members."),
    front: bool = typer.Option(False, "--front", help="Confirm the whole front (the default)."),
    epochs: int | None = typer.Option(None, help="Epochs per run (default: 5x the search's proxy epochs)."),
    seeds: int = typer.Option(3, help="Seeds per design (0 .. SEEDS-1)."),
    train_subset: int | None = typer.Option(None, help="Training images (default: all of the training split)."),
    storage: StorageURL = DEFAULT_STORAGE,
    data_dir: str | None = typer.Option(None, help="Folder of the torchvision data sets."),
    download: bool = typer.Option(False, help="Let torchvision download a missing data set."),
    run_dir: str = typer.Option("runs", help="Folder for the retrained weights and Ray results."),
    cpus_per_trial: float = typer.Option(1.0, help="CPUs per run (Ray resources)."),
    gpus_per_trial: float = typer.Option(0.0, help="GPUs per run; fractions share a GPU."),
    max_concurrent: int = typer.Option(0, help="Runs at once (0: one per GPU share, or 1 on CPU)."),
    address: str | None = typer.Option(None, help="Join a Ray cluster ('auto' or host:port)."),
    timeout: float | None = typer.Option(None, help="Wall-clock budget in seconds."),
    artifact_store: str | None = typer.Option(None, help="Optuna artifact store for the retrained weights (default: "
                                                         "RUN_DIR/artifacts)."),
) -> None:
    """Retrain chosen designs from scratch with several seeds under a longer protocol, and show how sure each
    accuracy is (continues an interrupted retrain; never trains a design, seed and protocol twice)."""
    from .engine.retrain import RetrainConfig, run_retrain
    from .study import front_records, load_study

    numbers = None
    if trials is not None:
        try:
            numbers = [int(x) for x in trials.split(",") if x.strip()]
        except ValueError:
            _fail(f"trials: {trials!r} is not a comma-separated list of trial numbers (e.g. 3,7,12)")
    cfg = RetrainConfig(study=study, storage=storage, trials=numbers, top=top, front=front, epochs=epochs, seeds=seeds,
                        train_subset=train_subset, data_dir=data_dir, download=download, run_dir=run_dir,
                        cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial, max_concurrent=max_concurrent,
                        address=address, timeout=timeout, artifact_store=artifact_store)
    _guard(cfg.validate)

    def on_event(ev: dict[str, Any]) -> None:
        where = f"trial {ev['trial']:>3} seed {ev['seed']}"
        if ev["kind"] == "done":
            console.print(f"  [green]{where}[/] confirmed: val acc {ev['accuracy']:.4f}", highlight=False)
        elif ev["kind"] == "skip":
            console.print(f"  {where}: already confirmed under this protocol", highlight=False)
        elif ev["kind"] == "fail":
            console.print(f"  [red]{where} failed[/]: {escape(str(ev['reason']))}", highlight=False)

    console.print(f"[bold]vitnas retrain[/] study [cyan]{escape(study)}[/]", highlight=False)
    try:
        runs = _guard(run_retrain, cfg, progress=on_event)
    except KeyboardInterrupt:
        err_console.print("interrupted: the finished runs are stored; run the same command again to continue.",
                          highlight=False, markup=False)
        raise typer.Exit(130) from None
    stored = sum(len(r) for r in runs.values())
    console.print(f"{stored} run(s) of {len(runs)} design(s) stored with the study", highlight=False)
    st = _guard(load_study, storage, study)
    records = _guard(front_records, st)
    console.print(_front_table(records, f"Pareto front of {study} after retraining"))
    _separation_notes(records)


@app.command()
def status(study: StudyName, storage: StorageURL = DEFAULT_STORAGE, as_json: JSONFlag = False) -> None:
    """Show complete, running, failed and queued trials, the front size and the hypervolume."""
    from . import objectives
    from .study import describe_shape, load_study, study_status

    info = _guard(study_status, _guard(load_study, storage, study))
    if as_json:
        return _print_json(info)
    table = Table(title=escape(f"Study {study} ({info['dataset']})"), title_justify="left", show_header=False)
    for key in ("complete", "running", "failed", "queued", "pruned", "front_size", "confirmed"):
        table.add_row(key.replace("_", " "), str(info[key]))
    if info.get("paused"):
        table.add_row("paused", f"{info['paused']} (paused at the promotion rung; "
                      + ("superseded, off the front)" if info.get("promoted")
                         else "waiting for it; until then their rung accuracies are on the front)"))
    by = (f"; confirmed means where retrained, the proxy's alone {info['proxy_hypervolume']:.4f}"
          if info["confirmed"] else "")
    table.add_row("hypervolume", f"{info['hypervolume']:.4f} of the normalised objective cube (bounds: "
                                 f"{escape(objectives.HVBounds.from_dict(info['hv_bounds']).describe())}{by})")
    table.add_row("shapes", escape(f"accuracy at the proxy's {info['proxy_img_size']} px; params, FLOPs, "
                                   f"throughput at {describe_shape(info['target'])}"))
    if info["budgets"]:
        table.add_row("budgets", escape(", ".join(f"{k} {v:,.6g}" for k, v in info["budgets"].items())
                                        + f" ({info['refused']} proposal(s) refused before training, "
                                        f"{info['infeasible']} trained trial(s) break one)"))
    for reason, n in sorted(info["fail_reasons"].items(), key=lambda kv: -kv[1]):
        table.add_row("failed because", escape(f"{n} x {reason}"))
    console.print(table)


@app.command()
def space(
    config: str | None = typer.Option(None, help="YAML or TOML file narrowing the gene domains."),
    as_json: JSONFlag = False,
) -> None:
    """Print the genes, their domains and the rules that tie them to attention types."""
    from search_spaces import SearchSpace, registry
    from search_spaces.genes import applicable_genes, rules

    sp = _guard(SearchSpace.from_file, config) if config else SearchSpace()
    if as_json:
        return _print_json({"domains": sp.to_dict(), "rules": dict(rules()), "size": sp.size()})
    table = Table(title=f"Genes ({sp.size():,} architectures)", title_justify="left")
    table.add_column("gene")
    table.add_column("domain")
    table.add_column("applies to")
    attention_genes = {g.name: g for g in registry.genes()}  # the others apply to every attention
    for name, values in sp.to_dict().items():
        where = "all"
        if name in attention_genes:
            where = ", ".join(a for a in sp.attention if name in applicable_genes(a))
            if where and attention_genes[name].per_head:
                where += f" (one {attention_genes[name].item} per head)"
        table.add_row(escape(name), escape(", ".join(json.dumps(v) for v in values)), escape(where or "-"))
    console.print(table)
    rule_table = Table(title="Rules", title_justify="left")
    rule_table.add_column("gene")
    rule_table.add_column("rule")
    for gene, rule in rules():
        rule_table.add_row(escape(gene), escape(rule))
    console.print(rule_table)


@app.command()
def dashboard(
    study: StudyName,
    storage: StorageURL = DEFAULT_STORAGE,
    out: str = typer.Option("report.html", help="HTML file to write (self-contained, opens offline)."),
    serve: bool = typer.Option(False, "--serve", help="Serve a live view that redraws as trials finish."),
    host: str = typer.Option("127.0.0.1", help="Address to bind with --serve."),
    port: int = typer.Option(8050, help="Port to listen on with --serve."),
    refresh: float = typer.Option(5.0, help="Seconds between checks for finished trials with --serve."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --out that is not a vitnas report "
                                                      "(never the study's storage)."),
) -> None:
    """Write the HTML dashboard of a study (Pareto front, hypervolume, genes, curves), or serve it live."""
    from .study.optuna_adapter import import_importance

    import_importance()  # without scikit-learn, which the dashboard's importances do not need
    import dashboards

    from .study import load_study

    if serve:
        _guard(dashboards.serve, storage, study, host=host, port=port, refresh=refresh,
               log=lambda message: console.print(message, highlight=False, markup=False))
        return
    st = _guard(load_study, storage, study)
    path = _guard(dashboards.build_report, st, out, source=storage, force=force)
    console.print(f"dashboard of {escape(study)} ({len(st.get_trials(deepcopy=False))} trials) written to "
                  f"[cyan]{escape(str(path))}[/]", highlight=False)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: usage errors (unknown option or command, a non-number where a number
    is due) are one line on stderr and exit status 2, like every other input error."""
    import os

    from typer.exceptions import TyperException

    # Commands that build no model (help, space, status, pareto, dashboard) then load no torch or timm.
    deferred = os.environ.get("VITNAS_DEFER_MODEL")
    os.environ["VITNAS_DEFER_MODEL"] = "1"
    try:
        code = app(args=argv, standalone_mode=False)
    except typer.Abort:
        sys.exit(130)
    except TyperException as exc:  # typer's vendored click UsageError / BadParameter / NoSuchOption ...
        ctx = getattr(exc, "ctx", None)
        if exc.__class__.__name__ == "NoArgsIsHelpError" and ctx is not None:
            sys.stdout.write(ctx.get_help() + "\n")
            sys.exit(2)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        err_console.print(f"[bold red]error:[/] {escape(message + hint)}", highlight=False, soft_wrap=True)
        sys.exit(getattr(exc, "exit_code", 2) or 2)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # a failure inside a dependency: one line, unless asked for the traceback
        line = None if os.environ.get("VITNAS_DEBUG") == "1" else dependency_failure(exc)
        if line is None:
            raise
        err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
        sys.exit(1)
    finally:
        if deferred is None:
            os.environ.pop("VITNAS_DEFER_MODEL", None)
        else:
            os.environ["VITNAS_DEFER_MODEL"] = deferred
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
