"""Bookkeeping that stays flat as a study grows: what is read, and how often (never how long it takes).

- :class:`nas.study.BulkRDBStorage` returns exactly the trials Optuna's own RDB reader returns, for every
  filter Optuna's trial cache uses;
- the read-only commands list study names without reading trials, and ``study_status`` decodes user
  attributes of failed trials only;
- the driver reads the whole study once (when it starts), never per proposal;
- the live view reads only new and unfinished trials on a redraw, and parses only their genes;
- scatter plots with one marker per trial switch to WebGL above a trial count.
"""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from nas import objectives
from nas.study import BulkRDBStorage, create_or_load_study, load_study, open_storage, read_trials, study_status


def _fill(study: optuna.Study, n: int = 24) -> None:
    """``n`` trials of every state, with parameters, user and system attributes and intermediate values."""
    dists = {"attention": CategoricalDistribution(["mhsa", "fnet", "mixer"]), "depth": IntDistribution(2, 6),
             "lr": FloatDistribution(1e-4, 1e-2, log=True)}
    for i in range(n):
        state = (TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE)[i % 4]
        if i == n - 2:
            state = TrialState.RUNNING
        if i == n - 1:
            state = TrialState.WAITING
        values = None
        if state == TrialState.COMPLETE:
            values = [0.5 + i / 100, float(10_000 + 997 * (i % 7)), 100.0 * (1 + i % 5)]
            if i == 5:
                values[2] = math.inf
        params = {"attention": ("mhsa", "fnet", "mixer")[i % 3], "depth": 2 + i % 5, "lr": 1e-3 * (1 + i % 3)}
        attrs = {"arch_key": f"k{i % 9}", "curve": [{"epoch": e, "val_accuracy": 0.1 * e} for e in range(1, 4)]}
        if state == TrialState.FAIL:
            attrs["fail_reason"] = f"RuntimeError: boom {i % 3}"
        system = {"constraints": [0.5 if i % 6 == 0 else -1.0]} if values else {}
        study.add_trial(create_trial(state=state, values=values, params=params if state != TrialState.WAITING else {},
                                     distributions=dists if state != TrialState.WAITING else {}, user_attrs=attrs,
                                     system_attrs=system, intermediate_values={1: 0.1, 2: 0.2 + i / 1000}))


@pytest.fixture
def url(tmp_path):
    url = f"sqlite:///{tmp_path / 'scale.db'}"
    study = create_or_load_study(open_storage(url), "s")
    _fill(study)
    return url


def test_bulk_reader_returns_what_optuna_returns(url):
    storage = open_storage(url)
    assert isinstance(storage, BulkRDBStorage) and isinstance(storage, optuna.storages.RDBStorage)
    study_id = storage.get_study_id_from_name("s")
    ids = [t._trial_id for t in optuna.storages.RDBStorage._get_trials(storage, study_id, None, set(), -1)]
    cases = [(None, set(), -1), ((TrialState.FAIL,), set(), -1), ((TrialState.COMPLETE, TrialState.RUNNING), set(), -1),
             (None, {ids[3], ids[-2]}, ids[10]), (None, set(), ids[-3]), (None, {ids[20]}, ids[5]), (None, set(), ids[-1])]
    for states, included, greater in cases:
        ours = storage._get_trials(study_id, states, included, greater)
        theirs = optuna.storages.RDBStorage._get_trials(storage, study_id, states, included, greater)
        assert ours == theirs and [t._trial_id for t in ours] == [t._trial_id for t in theirs]
    assert len(storage._get_trials(study_id, None, set(), -1)) == 24
    with pytest.raises(KeyError):  # an unknown study: Optuna's own error
        storage._get_trials(study_id + 100, None, set(), -1)
    # Through the study (Optuna's trial cache around the storage): the same trials as ever.
    study = load_study(url, "s")
    assert study.get_trials(deepcopy=False) == optuna.storages.RDBStorage._get_trials(storage, study_id, None, set(), -1)


def test_light_read_and_status(url, monkeypatch):
    study = load_study(url, "s")
    full = study.get_trials(deepcopy=False)
    light = read_trials(study, user_attrs=False)
    assert [(t.number, t.state, t.values, t.constraints) for t in light] == \
        [(t.number, t.state, t.values, t.constraints) for t in full]
    assert all(t.user_attrs == {} and t.params == {} for t in light)
    # study_status decodes user attributes of the failed trials only.
    seen: list[tuple] = []
    real = BulkRDBStorage._get_trials

    def spy(self, study_id, states, included_trial_ids, trial_id_greater_than):
        seen.append(tuple(states) if states is not None else None)
        return real(self, study_id, states, included_trial_ids, trial_id_greater_than)

    monkeypatch.setattr(BulkRDBStorage, "_get_trials", spy)
    info = study_status(load_study(url, "s"))
    assert seen == []  # not even once through Optuna's cache: two bulk reads, one of them failed trials only
    assert (info["complete"], info["failed"], info["running"], info["queued"]) == (17, 5, 1, 1)
    assert info["fail_reasons"] == {"RuntimeError: boom 2": 2, "RuntimeError: boom 0": 2, "RuntimeError: boom 1": 1}
    finite = [t for t in full if t.state == TrialState.COMPLETE and all(math.isfinite(v) for v in t.values)]
    assert info["front_size"] == len(objectives.front_trials(finite, study.directions))


def test_commands_list_studies_without_reading_trials(url, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("summaries read every trial of every study")

    monkeypatch.setattr(optuna, "get_all_study_summaries", boom)
    monkeypatch.setattr(optuna.study, "get_all_study_summaries", boom)
    assert len(load_study(url, "s").trials) == 24
    assert create_or_load_study(open_storage(url), "s").study_name == "s"


def _full_reads(monkeypatch) -> list[int]:
    """Trial ids greater than which each storage read asked (-1: the whole study)."""
    reads: list[int] = []
    real = BulkRDBStorage._get_trials

    def spy(self, study_id, states, included_trial_ids, trial_id_greater_than):
        reads.append(trial_id_greater_than)
        return real(self, study_id, states, included_trial_ids, trial_id_greater_than)

    monkeypatch.setattr(BulkRDBStorage, "_get_trials", spy)
    return reads


def test_driver_reads_the_study_once(tmp_path, monkeypatch):
    from nas.engine.driver import StudyDriver
    from nas.engine.settings import make_sampler
    from search_spaces import SearchSpace

    url = f"sqlite:///{tmp_path / 'd.db'}"
    study = create_or_load_study(open_storage(url), "d")
    space = SearchSpace()
    for i in range(6):  # a few finished trials of the real space, as a search leaves them
        trial = study.ask()
        arch = space.suggest(trial)
        trial.set_user_attr("arch", arch.to_dict())
        trial.set_user_attr("arch_key", arch.canonical_key(8))
        study.tell(trial, [0.5 + i / 100, 1e4 + i, 1e3 + i])
    reads = _full_reads(monkeypatch)
    study = create_or_load_study(open_storage(url), "d")
    study.sampler = make_sampler("nsga2", 0, 40, 4)
    driver = StudyDriver(study, space, img_size=8, target=10**6)
    assert reads.count(-1) == 1  # the driver's one read of the study
    for i in range(8):
        config = driver.suggest(str(i))
        result = config["known"] or {"accuracy": 0.6, "params": 2e4, "throughput": 2e3, "curve": []}
        driver.on_trial_complete(str(i), result)
    assert reads.count(-1) == 1 and len(reads) > 1  # later reads: only trials newer than the last finished one
    assert len(study.trials) == 14


def test_live_view_reads_and_parses_only_what_changed(tmp_path, monkeypatch):
    import dashboards.data as dd
    from dashboards.serve import DashboardServer
    from search_spaces import SearchSpace

    url = f"sqlite:///{tmp_path / 'live.db'}"
    study = create_or_load_study(open_storage(url), "live")
    space = SearchSpace()

    def add(n: int) -> None:
        for i in range(n):
            trial = study.ask()
            arch = space.suggest(trial)
            trial.set_user_attr("arch", arch.to_dict())
            study.tell(trial, [0.5 + i / 100, 1e4 + 10 * i, 1e3 + i])

    add(12)
    reads = _full_reads(monkeypatch)
    parsed: list[int] = []
    real_arch = dd._arch
    monkeypatch.setattr(dd, "_arch", lambda t: parsed.append(t.number) or real_arch(t))
    server = DashboardServer(("127.0.0.1", 0), load_study(url, "live"), url, refresh=5.0)
    try:
        server.page()
        assert reads.count(-1) == 1 and sorted(set(parsed)) == list(range(12))
        reads.clear()
        parsed.clear()
        add(3)
        server.page()
        assert -1 not in reads  # a redraw reads the trials after the last finished one, not the study
        assert sorted(set(parsed)) == [12, 13, 14]  # and parses only the new trials' genes
        assert len(server._data.trials) == 15
    finally:
        server.server_close()


def test_scatter_switches_to_webgl_above_the_threshold(url):
    import dashboards
    from dashboards.figures import pareto_2d_figures

    data = dashboards.load_data(load_study(url, "s"))
    small = pareto_2d_figures(data, gl_threshold=1_000)
    large = pareto_2d_figures(data, gl_threshold=5)
    points = [tr for tr in small.data if (tr.meta or {}).get("role") in ("front", "dominated")]
    assert points and all(tr.type == "scatter" for tr in points)
    gl = [tr for tr in large.data if (tr.meta or {}).get("role") in ("front", "dominated")]
    assert gl and all(tr.type == "scattergl" for tr in gl)
