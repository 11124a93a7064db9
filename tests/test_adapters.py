"""The adapter modules (nas/study/optuna_adapter.py, trainers/torch_adapter.py) are the only places vitnas uses a
library past its public API. These tests pin each use on whatever release CI resolves (the newest, and the
declared lower bounds): the day a release moves a private name, they fail here, not inside a search."""

import subprocess
import sys

import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from nas.study import open_storage, optuna_adapter


@pytest.fixture
def study(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'a.db'}")
    st = optuna.create_study(storage=storage, study_name="a", directions=["maximize", "minimize"])
    for i in range(6):
        t = st.ask({"g": CategoricalDistribution(["x", "y"])})
        t.set_user_attr("curve", [{"epoch": 1, "val_accuracy": i / 10}])
        t.set_constraint("max_params", 0.5 - i / 10)  # optuna's public constraint API, system attributes
        if i == 4:
            st.tell(t, state=TrialState.FAIL)
        elif i < 5:
            st.tell(t, [i / 10, 100 - i])
    return st  # trial 5 stays RUNNING


def _same(a, b, user_attrs=True):
    assert (a.number, a.state, a.values, a.datetime_start, a.datetime_complete) == \
        (b.number, b.state, b.values, b.datetime_start, b.datetime_complete)
    assert a.system_attrs == b.system_attrs and a.constraints == b.constraints
    if user_attrs:
        assert (a.params, a.distributions, a.user_attrs, a.intermediate_values) == \
            (b.params, b.distributions, b.user_attrs, b.intermediate_values)
    else:
        assert a.params == {} and a.user_attrs == {} and a.intermediate_values == {}


@pytest.mark.parametrize("states", [None, (TrialState.COMPLETE,), (TrialState.FAIL, TrialState.RUNNING)])
@pytest.mark.parametrize("user_attrs", [True, False])
def test_bulk_reads_return_what_optuna_returns(study, states, user_attrs):
    mine = optuna_adapter.read_trials(study, states, user_attrs=user_attrs)
    theirs = sorted(study.get_trials(deepcopy=False, states=states), key=lambda t: t.number)
    assert [t.number for t in mine] == [t.number for t in theirs] and mine
    for a, b in zip(mine, theirs):
        _same(a, b, user_attrs)


def test_the_bulk_storage_serves_optuna_own_reads(study):
    # optuna.load_study goes through BulkRDBStorage._get_trials (the overridden private method).
    again = optuna.load_study(study_name="a", storage=study._storage)  # noqa: SLF001 - test only
    assert isinstance(optuna_adapter._unwrap(again._storage) or again._storage, optuna_adapter.BulkRDBStorage)
    for a, b in zip(again.get_trials(), study.get_trials()):
        _same(a, b)


def test_engine_of_finds_the_database_and_none_in_memory(study):
    import sqlalchemy

    assert isinstance(optuna_adapter.study_engine(study), sqlalchemy.engine.Engine)
    assert optuna_adapter.study_engine(optuna.create_study()) is None


def test_metric_names_are_set(study):
    optuna_adapter.set_metric_names(study, ["accuracy", "params"])
    assert optuna.load_study(study_name="a", storage=study._storage).metric_names == ["accuracy", "params"]


def test_importance_imports_without_scikit_learn():
    code = ("import sys; from nas.study.optuna_adapter import import_importance; import_importance(); "
            "import optuna.importance as imp; assert 'sklearn' not in sys.modules; "
            "print(imp.PedAnovaImportanceEvaluator.__name__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "PedAnovaImportanceEvaluator"


def test_torch_dispatch_mode_sees_the_tensors_a_pass_creates():
    from trainers.measure import PeakMemoryTracker
    from trainers.torch_adapter import TorchDispatchMode

    assert issubclass(PeakMemoryTracker, TorchDispatchMode)
    with PeakMemoryTracker() as tracker:
        a = torch.ones(1000)  # 4,000 bytes
        b = a * 2  # 4,000 more, alive with a
        del a, b
    assert tracker.peak >= 8000
