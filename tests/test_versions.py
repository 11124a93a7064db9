"""What a user sees of the versions pip resolved: ``vitnas --version``, and one line naming the package when a
failure comes from inside a dependency (the traceback only with ``--debug`` or ``VITNAS_DEBUG=1``)."""

import os
import subprocess
import sys
from importlib.metadata import version

import optuna
import pytest

from nas import cli


def test_version_names_vitnas_and_the_resolved_dependencies():
    proc = subprocess.run([sys.executable, "-m", "nas", "--version"], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr
    for name in ("vitnas", "torch", "timm", "optuna", "ray"):
        assert f"{name} {version(name)}" in proc.stdout


def _inside_optuna():
    optuna.distributions.json_to_distribution("{not json")  # fails in json, called from optuna


def test_a_failure_inside_a_dependency_is_one_line_naming_it(monkeypatch, capsys):
    monkeypatch.delenv("VITNAS_DEBUG", raising=False)
    monkeypatch.setattr("search_spaces.SearchSpace.size", lambda self: _inside_optuna())
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["space"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert f"inside optuna {version('optuna')}" in " ".join(lines)
    assert "optuna/distributions.py" in err and "vitnas --version" in err
    assert "github.com/optuna/optuna" in err  # where to report, from optuna's own metadata


def test_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setattr("search_spaces.SearchSpace.size", lambda self: _inside_optuna())
    monkeypatch.delenv("VITNAS_DEBUG", raising=False)
    with pytest.raises(ValueError):  # json's JSONDecodeError, re-raised as it was
        cli.main(["--debug", "space"])
    assert os.environ.pop("VITNAS_DEBUG") == "1"


def test_vitnas_own_failure_is_not_blamed_on_a_dependency():
    try:
        cli._amount("max_params", "lots")
    except ValueError as exc:
        assert cli.dependency_failure(exc) is None
    else:
        raise AssertionError("expected a ValueError")
