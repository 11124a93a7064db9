"""Property-based: malformed or hostile config files and CLI arguments always give one clean error line
(exit status 2), never a traceback, and never change a stored study."""

import string

import optuna
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from nas.cli import app
from search_spaces import SearchSpace, SpaceError

runner = CliRunner()

GENES = ["attention", "embed_dim", "depth", "num_heads", "mlp_ratio", "patch_size", "pos_encoding", "stem",
         "compact", "mask_ratios", "mask_layers", "qna_window", "refiner_expansion"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["mhsa", "qna", "rope2d", "conv", "1e309", "NaN"]))
values = st.one_of(scalars, st.lists(scalars, max_size=5), st.dictionaries(st.text(max_size=5), scalars, max_size=3))
mappings = st.dictionaries(st.one_of(st.sampled_from(GENES), st.text(max_size=10)), values, max_size=5)


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=mappings)
def test_config_mappings_either_load_or_raise_space_error(data):
    try:
        space = SearchSpace.from_mapping(data)
    except SpaceError as exc:
        message = str(exc)
        assert message and "\n" not in message
        assert message.split(":")[0] in GENES + ["config"]
    else:
        assert space.size() > 0
        assert set(space.attention) <= {"mhsa", "mait", "refiner", "qna", "performer", "linformer", "nystrom", "fnet", "mixer"}


yaml_noise = st.text(alphabet=string.printable, max_size=200)
hostile_yaml = st.sampled_from([
    "a: &a [*a]\n",                                          # recursive alias
    "x: &x\n  - *x\n",
    "!!python/object/apply:os.system ['echo pwned']\n",       # code execution attempt (safe_load refuses)
    "attention: !!python/name:os.system\n",
    "embed_dim: [" + "1," * 5000 + "1]\n",                    # long list of an allowed type but invalid combos
    "depth: [[[[[[[[[[]]]]]]]]]]\n",
    "\x00\x01\x02",
    "attention: [mhsa]\nattention: [qna]\n",                   # duplicate keys
])


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(yaml_noise, hostile_yaml), suffix=st.sampled_from([".yaml", ".toml", ".yml", ".json"]))
def test_config_files_never_traceback(tmp_path_factory, text, suffix):
    path = tmp_path_factory.mktemp("cfg") / f"space{suffix}"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    result = runner.invoke(app, ["space", "--config", str(path)])
    if result.exit_code != 0:
        assert result.exit_code == 2, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        assert "Traceback" not in result.output
        assert result.output.startswith("error: ")
        assert len(result.output.strip().splitlines()) <= 3  # one line, possibly soft-wrapped


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 's.db'}"
    study = optuna.create_study(study_name="kept", storage=url, directions=["maximize", "minimize", "maximize"])
    study.set_metric_names(["accuracy", "params", "throughput"])
    for i in range(3):
        t = study.ask()
        study.tell(t, [0.5 + i / 10, 1000 * (i + 1), 100.0])
    return url


def _snapshot(url):
    study = optuna.load_study(study_name="kept", storage=url)
    return [(t.number, t.state, t.values, t.user_attrs, t.params) for t in study.trials], \
        sorted(s.study_name for s in optuna.get_all_study_summaries(url))


option_values = st.one_of(st.text(max_size=20), st.integers(-5, 10**9).map(str), st.sampled_from(
    ["0", "-1", "nan", "inf", "1e400", "", "../../etc/passwd", "sqlite:///", "kept", "digits", "cmaes"]))


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(["search", "pareto", "export", "status"]),
       option=st.sampled_from(["--trials", "--epochs", "--dataset", "--sampler", "--study", "--trial", "--seed",
                               "--population-size", "--gpus-per-trial", "--cpus-per-trial", "--timeout",
                               "--train-subset", "--max-concurrent"]),
       value=option_values)
@pytest.mark.slow
def test_cli_bad_options_are_clean_and_change_nothing(stored, tmp_path_factory, command, option, value):
    # "--study kept" names the stored study: a valid read, not a bad option.
    assume(not (command in ("pareto", "status") and option == "--study" and value == "kept"))
    before = _snapshot(stored)
    args = [command, option, value, "--storage", stored]
    if command in ("pareto", "export", "status") and option != "--study":
        args += ["--study", "kept"]
    if command == "export":
        args += ["--out", str(tmp_path_factory.mktemp("out") / "m")]
        if option != "--trial":
            args += ["--trial", "77"]
    if command == "search":
        # Never start a real search here: a valid option must still be refused by another bad one.
        args += ["--trials", "0"] if option != "--trials" else ["--epochs", "0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (args, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, repr(result.exception))
    assert "Traceback" not in result.output
    assert _snapshot(stored) == before
