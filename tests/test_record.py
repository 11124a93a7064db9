"""The typed study record (StudyMeta): written once, read in one place, versioned, migrated from the unversioned
layout, refused when a newer vitnas wrote it; resume compatibility is one comparison; and a search's settings
are declared once (SearchConfig's fields give the CLI's options and the worker's settings)."""

import dataclasses

import optuna
import pytest
from typer.testing import CliRunner

from nas.cli import app
from nas.engine.settings import SearchConfig
from nas.study import StudyError, StudyMeta, create_or_load_study, open_storage, read_meta
from nas.study.record import META_KEY, META_VERSION

META = StudyMeta(dataset="digits", img_size=16, in_chans=1, num_classes=10, epochs=2, train_subset=None,
                 val_subset=None, batch_size=32, lr=3e-3, target={"img_size": 16, "batch": 64, "dtype": "auto"},
                 budgets={}, space={"attention": ["mhsa", "fnet"]}, population_size=4,
                 data_config={"input_size": [1, 16, 16]})


@pytest.fixture
def storage(tmp_path):
    return open_storage(f"sqlite:///{tmp_path / 'm.db'}")


def test_the_record_round_trips_with_its_version(storage):
    study = create_or_load_study(storage, "s", meta=META, derive=lambda m: {"hv_bounds": {"accuracy": [0.1, 1.0]}})
    assert study.user_attrs[META_KEY] == META_VERSION
    assert read_meta(study) == META.replace(hv_bounds={"accuracy": [0.1, 1.0]})
    assert study.user_attrs["dataset"] == "digits"  # one user attribute per field, as optuna-dashboard shows them


def test_resuming_is_one_comparison_naming_the_first_difference(storage):
    create_or_load_study(storage, "s", meta=META)
    assert create_or_load_study(storage, "s", meta=META).study_name == "s"
    with pytest.raises(StudyError, match=r"^study: 's' was created with epochs=2, not 6; use the same settings"):
        create_or_load_study(storage, "s", meta=META.replace(epochs=6))
    with pytest.raises(StudyError, match=r"was created with train_subset=None, not 500"):  # None is a value here
        create_or_load_study(storage, "s", meta=META.replace(train_subset=500))
    with pytest.raises(StudyError, match=r"^config: study 's' was searched with attention=\['mhsa', 'fnet'\]"):
        create_or_load_study(storage, "s", meta=META.replace(space={"attention": ["mhsa"]}))


def test_an_unversioned_study_is_migrated(storage):
    old = optuna.create_study(storage=storage, study_name="old", directions=["maximize", "minimize", "maximize"])
    for key, value in {"dataset": "digits", "img_size": 16, "in_chans": 1, "num_classes": 10, "epochs": 2}.items():
        old.set_user_attr(key, value)  # the layout before the record: the same keys, no version, fewer of them
    study = create_or_load_study(storage, "old", meta=META.replace(train_subset=500))  # lenient: it stored none
    assert study.user_attrs[META_KEY] == META_VERSION
    migrated = read_meta(study)
    assert migrated.epochs == 2 and migrated.space == META.space and migrated.train_subset == 500
    with pytest.raises(StudyError, match="was created with epochs=2, not 3"):
        create_or_load_study(storage, "old", meta=META.replace(epochs=3))


def test_a_study_from_a_newer_vitnas_is_refused(storage):
    study = create_or_load_study(storage, "new", meta=META)
    study.set_user_attr(META_KEY, META_VERSION + 1)
    with pytest.raises(StudyError, match=r"^study: written by a newer vitnas \(record version 2; this vitnas reads up "
                                         r"to 1\); upgrade vitnas"):
        create_or_load_study(storage, "new", meta=META)


def test_search_settings_are_declared_once():
    fields = {f.name: f for f in dataclasses.fields(SearchConfig)}
    help_text = CliRunner().invoke(app, ["search", "--help"], env={"COLUMNS": "300"}).output
    for name, f in fields.items():
        option = "--" + name.replace("_", "-")
        assert (option in help_text) == f.metadata["cli"], name
    worker = SearchConfig(max_params=1e6).worker_settings()
    assert set(worker) == {n for n, f in fields.items() if f.metadata["worker"]} | {"run_dir", "cache_path",
                                                                                   "artifact_store"}
    assert worker["max_params"] == 1e6 and "storage" not in worker
