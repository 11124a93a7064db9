"""nas/objectives.py: one description of the objectives, read by the study, the CLI, the dashboards and the
model card; its exact hypervolume against independent computations; a fourth objective added at run time
flows through the front, the knee, the hypervolume, the tables, the figures and the model card."""

from __future__ import annotations

import itertools
import math

import numpy as np
import optuna
import pytest
from optuna.study import StudyDirection
from optuna.trial import TrialState, create_trial

from nas import objectives
from nas.objectives import Objective


def _study(rows, directions=None, **trial_kw):
    study = optuna.create_study(directions=directions or objectives.directions(),
                                storage=optuna.storages.InMemoryStorage())
    for values in rows:
        study.add_trial(create_trial(values=list(values), **trial_kw))
    return study


# ---------------------------------------------------------------------------- the record
def test_directions_modes_and_names_agree():
    spec = objectives.spec()
    assert objectives.names() == ("accuracy", "params", "throughput")
    assert objectives.direction_names() == ("maximize", "minimize", "maximize")
    assert objectives.directions() == [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE, StudyDirection.MAXIMIZE]
    assert [o.mode for o in spec] == ["max", "min", "max"]
    for o, d, m in zip(spec, objectives.directions(), [o.mode for o in spec], strict=True):
        assert o.study_direction == d and d.name.lower() == o.direction
        assert m == o.direction[:3] and o.sign == (1 if m == "max" else -1)
        assert o.loss(2.0) == (-2.0 if o.maximize else 2.0)
    # nas.study keeps its names, derived from the record
    from nas.study import DIRECTIONS, OBJECTIVES

    assert OBJECTIVES == objectives.names() and DIRECTIONS == objectives.direction_names()
    assert objectives.get("params").scale == "log" and objectives.primary().name == "accuracy"
    with pytest.raises(ValueError, match="objective: unknown 'latency'; allowed: accuracy, params, throughput"):
        objectives.get("latency")


@pytest.mark.parametrize("kwargs, field", [
    ({"name": "x", "direction": "up"}, "direction"),
    ({"name": "x", "direction": "maximize", "scale": "exp"}, "scale"),
    ({"name": "", "direction": "maximize"}, "name"),
    ({"name": "x", "direction": "minimize", "log_floor": 0.0}, "log_floor"),
    ({"name": "x", "direction": "minimize", "scale": "log", "bounds": (0.0, 10.0)}, "bounds"),
    ({"name": "x", "direction": "minimize", "bounds": (3.0, 3.0)}, "bounds"),
])
def test_a_bad_objective_is_refused(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}: "):
        Objective(**kwargs)


def test_labels_and_formats():
    assert objectives.labels() == {"accuracy": "accuracy", "params": "params", "throughput": "throughput (img/s)"}
    assert [o.header for o in objectives.spec()] == ["accuracy", "params", "throughput img/s"]
    assert [o.short_label for o in objectives.spec()] == ["accuracy", "params (k)", "throughput (img/s)"]
    assert objectives.get("accuracy").title == "accuracy (validation top-1)"
    f = objectives.format_value
    assert f("accuracy", 0.95) == "0.9500" and f("params", 1234567.0) == "1,234,567"
    assert f("throughput", 12345.6) == "12346"                      # CLI tables
    assert f("throughput", 12345.6, "web") == "12,346"              # hover labels, HTML tables
    assert f("throughput", 12345.64, "card") == "12345.6"           # model card
    assert f("params", None) == "-" and f("accuracy", float("nan"), missing="") == ""
    with pytest.raises(ValueError, match="style: 'html'"):
        f("accuracy", 0.5, "html")
    # the one-line progress report of `vitnas search`, as it has always looked
    m = {"accuracy": 0.91234, "params": 12345, "throughput": 4321.4}
    params = f"{int(m['params']):,}"
    old = f"acc {m['accuracy']:.4f}  params {params:>9}  {m['throughput']:>8.0f} img/s"  # the f-string it replaced
    assert "  ".join(o.brief(m[o.name]) for o in objectives.spec()) == old
    assert objectives.record([0.5, 1000.0, 20.0]) == {"accuracy": 0.5, "params": 1000, "throughput": 20.0}
    assert objectives.record(None) == {"accuracy": None, "params": None, "throughput": None}


def test_normalised_bounds_map_each_objective_to_the_unit_interval():
    b = objectives.hv_bounds(10, (1e4, 1e6))
    assert b.to_dict() == {"accuracy": [0.1, 1.0], "params": [1e4, 1e6], "throughput": list(objectives.THROUGHPUT_RANGE)}
    assert b.normalise([1.0, 1e4, 1e6]) == [1.0, 1.0, 1.0]          # best bound of every objective
    assert b.normalise([0.1, 1e6, 1.0]) == [0.0, 0.0, 0.0]          # chance, the largest model, 1 img/s
    assert b.normalise([0.55, 1e5, 1e3]) == pytest.approx([0.5, 0.5, 0.5])  # linear accuracy, log params/throughput
    assert b.normalise([0.0, 1e9, 1e9]) == [0.0, 0.0, 1.0]          # clipped to the cube
    assert objectives.HVBounds.from_dict(b.to_dict()) == b
    assert objectives.study_bounds({"hv_bounds": b.to_dict()}) == b
    assert objectives.study_bounds({"num_classes": 4}).to_dict()["accuracy"] == [0.25, 1.0]  # a study without bounds
    with pytest.raises(ValueError, match="^hv_bounds: unknown objective 'latency'"):
        objectives.HVBounds.from_dict({"latency": [1, 2]})
    with pytest.raises(ValueError, match="^bounds: 'params' needs finite 0 < lower < upper"):
        objectives.hv_bounds(10, (0.0, 1e6))
    with pytest.raises(ValueError, match="^num_classes: "):
        objectives.hv_bounds(1)


def test_normalised_hypervolume_is_a_fraction_of_the_cube_no_objective_dominates():
    b = objectives.hv_bounds(10, (1e4, 1e6))
    hv = objectives.normalised_hypervolume
    assert hv([], b) == 0.0 and hv([[1.0, 1e4, 1e6]], b) == 1.0
    assert hv([[0.1, 1e4, 1e6]], b) == 0.0  # chance accuracy adds nothing, however small and fast
    assert hv([[0.55, 1e5, 1e3]], b) == pytest.approx(0.125)
    # One tiny, fast, inaccurate model next to an accurate one: bounded by its share of the cube (the old
    # linear img/s reference let such a model multiply a study's hypervolume by five).
    accurate = [0.95, 2e5, 2e3]
    tiny = [0.3, 1e4, 1e6]
    alone, both = hv([accurate], b), hv([accurate, tiny], b)
    assert 0 < alone < both <= alone + (0.2 / 0.9) * 1.0 * 1.0 + 1e-12
    rows = [[0.9, 2e5, 3e3], [0.7, 3e4, 2e4], [0.8, 8e4, 9e3], [0.2, 5e5, 10.0]]
    pts = np.array([[1.0 - t for t in b.normalise(r)] for r in rows])
    assert hv(rows, b) == pytest.approx(_inclusion_exclusion(pts, np.ones(3)), rel=1e-12)


# ---------------------------------------------------------------------------- hypervolume
def _inclusion_exclusion(points, ref) -> float:
    """Exact union volume of the boxes [p, ref] by inclusion-exclusion (exponential: small sets only)."""
    total = 0.0
    for k in range(1, len(points) + 1):
        for subset in itertools.combinations(points, k):
            corner = np.max(subset, axis=0)
            total += (-1) ** (k + 1) * float(np.prod(np.clip(ref - corner, 0.0, None)))
    return total


@pytest.mark.parametrize("dims", [1, 2, 3, 4, 5])
def test_hypervolume_is_exact(dims):
    rng = np.random.default_rng(dims)
    ref = rng.uniform(1.0, 2.0, size=dims)
    for case in range(40):
        n = int(rng.integers(1, 9))
        pts = rng.uniform(-1.0, 2.0, size=(n, dims))
        if case % 3 == 0:
            pts = np.round(pts, 1)  # ties and duplicates
        inside = pts[np.all(pts < ref, axis=1)]
        expected = _inclusion_exclusion(inside, ref) if len(inside) else 0.0
        assert objectives.hypervolume(pts, ref) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_hypervolume_against_monte_carlo_and_simple_cases():
    rng = np.random.default_rng(7)
    # a 3-objective front: points on a sphere, as a Pareto front of 60 members
    pts = rng.uniform(0.05, 1.0, size=(60, 3))
    pts /= np.linalg.norm(pts, axis=1, keepdims=True)
    ref = np.array([1.1, 1.1, 1.1])
    sample = rng.uniform(0.0, 1.1, size=(200_000, 3))
    covered = np.zeros(len(sample), dtype=bool)
    for p in pts:
        covered |= np.all(sample >= p, axis=1)
    mc = covered.mean() * 1.1 ** 3
    assert objectives.hypervolume(pts, ref) == pytest.approx(mc, abs=4 * math.sqrt(mc * (1.331 - mc) / len(sample)))
    # one box, nested boxes, nothing inside the reference
    assert objectives.hypervolume([[0.0, 0.0, 0.0]], [1.0, 2.0, 3.0]) == 6.0
    assert objectives.hypervolume([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]], [1.0, 1.0, 1.0]) == 1.0
    assert objectives.hypervolume([[1.0, 0.0, 0.0], [2.0, 2.0, 2.0]], [1.0, 1.0, 1.0]) == 0.0
    assert objectives.hypervolume([], [1.0, 1.0, 1.0]) == 0.0
    with pytest.raises(ValueError, match="ref: "):
        objectives.hypervolume([[0.0, 0.0]], [1.0, float("inf")])


def test_hypervolume_numbers_are_unchanged():
    """The exact hypervolume gives the numbers Optuna's own (private) implementation gave before."""
    wfg = pytest.importorskip("optuna._hypervolume.wfg")
    rng = np.random.default_rng(3)
    for dims in (2, 3, 4):
        pts = rng.uniform(0.0, 1.0, size=(40, dims))
        assert objectives.hypervolume(pts, np.ones(dims)) == pytest.approx(
            wfg.compute_hypervolume(pts, np.ones(dims)), rel=1e-12)


def test_study_hypervolume_uses_the_stored_bounds():
    from nas.study import hypervolume, study_status

    study = _study([[1.0, 1e3, 1e3], [0.5, 2e6, 10.0]])
    study.add_trial(create_trial(state=TrialState.FAIL))
    # default bounds: accuracy 0-1, params 1e3-1e8, throughput 1-1e6 img/s: 1 x 1 x (3 / 6 decades)
    assert hypervolume(study.trials) == pytest.approx(0.5)
    study.set_user_attr("hv_bounds", objectives.hv_bounds(10, (1e3, 1e5), (1.0, 1e3)).to_dict())
    assert study_status(study)["hypervolume"] == pytest.approx(1.0)  # at the best bound of every objective


# ---------------------------------------------------------------------------- front and knee
def _dominated_brute_force(losses: np.ndarray) -> np.ndarray:
    return np.array([any(np.all(q <= p) and np.any(q < p) for q in losses) for p in losses])


def test_pareto_mask_and_front_match_optuna():
    rng = np.random.default_rng(11)
    for case in range(30):
        losses = np.round(rng.uniform(0, 1, size=(int(rng.integers(1, 40)), 3)), 1 if case % 2 else 3)
        assert np.array_equal(objectives.pareto_mask(losses), ~_dominated_brute_force(losses))
    assert objectives.pareto_mask(np.zeros((0, 3))).shape == (0,)

    rows = [[rng.uniform(0.5, 1), rng.integers(1e3, 1e6), rng.uniform(10, 1e4)] for _ in range(60)]
    rows += rows[:5]  # duplicates stay on the front together, as in Optuna
    study = _study(rows)
    study.add_trial(create_trial(state=TrialState.FAIL))
    assert [t.number for t in objectives.front_trials(study.trials)] == sorted(t.number for t in study.best_trials)

    # with constraints, only feasible trials compete (Study.best_trials' rule)
    constrained = optuna.create_study(directions=objectives.directions())
    for k, values in enumerate(rows[:30]):
        constrained.add_trial(create_trial(values=values, system_attrs={"constraints": [k % 3 - 1.0]}))
    best = sorted(t.number for t in constrained.best_trials)
    assert [t.number for t in objectives.front_trials(constrained.trials)] == best
    assert all(t.constraints["0"] <= 0 for t in constrained.trials if t.number in best)


def test_knee_and_picks():
    from nas.study import knee_trial, pick_trial

    study = _study([[0.99, 1_000_000, 100.0], [0.50, 1_000, 100_000.0], [0.95, 20_000, 20_000.0],
                    [0.60, 900_000, 200.0]])
    assert knee_trial(study).number == 2 == pick_trial(study, "knee").number
    assert [pick_trial(study, n).number for n in objectives.names()] == [0, 1, 1]
    with pytest.raises(ValueError, match="pick: unknown value 'median'; allowed: knee, accuracy, params, throughput"):
        pick_trial(study, "median")
    dist = objectives.knee_distances([[0.5, 10.0, 10.0], [0.5, 10.0, 10.0]])
    assert dist == [0.0, 0.0]  # equal rows: every objective scaled to 1


# ---------------------------------------------------------------------------- a fourth objective
LATENCY = Objective("latency", "minimize", unit="ms", scale="log", per_device=True, fmt=".2f", bounds=(0.1, 100.0))
ROWS4 = ([0.99, 1_000_000, 100.0, 50.0],     # most accurate, huge and slow
         [0.50, 1_000, 100_000.0, 1.0],      # tiny and fast, inaccurate
         [0.95, 20_000, 20_000.0, 90.0],     # balanced in the first three, but high latency
         [0.94, 30_000, 15_000.0, 2.0],      # nearly as balanced, low latency: the knee with four objectives
         [0.60, 900_000, 200.0, 95.0])       # dominated


@pytest.fixture
def four(monkeypatch):
    monkeypatch.setattr(objectives, "OBJECTIVES_SPEC", objectives.OBJECTIVES_SPEC + (LATENCY,))
    from nas.study import StudyMeta, create_or_load_study

    study = create_or_load_study(optuna.storages.InMemoryStorage(), "four", meta=StudyMeta(dataset="digits"))
    for k, values in enumerate(ROWS4):
        study.add_trial(create_trial(values=values, user_attrs={"arch": {"attention": "mhsa"}, "flops": 1000 * k,
                                                                "device": "cpu", "curve": []}))
    return study


def test_a_fourth_objective_reaches_the_study_front_knee_and_hypervolume(four):
    from nas.study import front_records, hypervolume, knee_trial, pareto_front, pick_trial, study_status

    assert four.metric_names == ["accuracy", "params", "throughput", "latency"]
    assert [o.mode for o in objectives.spec()] == ["max", "min", "max", "min"]
    assert [t.number for t in pareto_front(four)] == [0, 1, 2, 3]
    assert knee_trial(four).number == 3
    with_three = _study([r[:3] for r in ROWS4], directions=objectives.directions()[:3])
    assert [t.number for t in with_three.best_trials] == [0, 1, 2]  # trial 3 is dominated without latency
    assert pick_trial(four, "latency").number == 1
    records = front_records(four)
    assert [r["trial"] for r in records] == [0, 2, 3, 1] and records[0]["latency"] == 50.0
    bounds = objectives.study_bounds(four.user_attrs)
    assert bounds.to_dict()["latency"] == [0.1, 100.0]
    pts = [[1.0 - t for t in bounds.normalise(r)] for r in ROWS4]
    expected = _inclusion_exclusion(np.array(pts), np.ones(4))
    assert hypervolume(four.trials, bounds) == pytest.approx(expected, rel=1e-12)
    status = study_status(four)
    assert status["front_size"] == 4 and status["hypervolume"] == pytest.approx(expected, rel=1e-12)


def test_a_fourth_objective_reaches_the_tables_figures_and_card(four):
    from rich.console import Console

    import dashboards
    from nas.cli import _front_table
    from nas.export import _model_card
    from nas.study import front_records
    from search_spaces import Architecture

    console = Console(width=250, record=True)
    console.print(_front_table(front_records(four), "front"))
    table = console.export_text()
    assert "latency ms" in table and "50.00" in table and "1.00" in table

    data = dashboards.load_data(four)
    assert data.values.shape == (5, 4) and data.front == {0, 1, 2, 3}
    fig2 = dashboards.pareto_2d_figures(data)
    pairs = {tuple(t.meta["pair"]) for t in fig2.data if isinstance(t.meta, dict) and "pair" in t.meta}
    assert pairs == {("params", "accuracy"), ("throughput", "accuracy"), ("latency", "accuracy"),
                     ("params", "throughput"), ("params", "latency"), ("throughput", "latency")}
    assert fig2.layout.xaxis3.type == "log" and fig2.layout.xaxis3.title.text == "latency (ms)"
    assert "latency %{x:.2f} ms" in next(t for t in fig2.data if t.meta.get("pair") == ["latency", "accuracy"]
                                         and t.meta.get("role") == "front").hovertemplate
    box = dashboards.attention_breakdown_figure(data)
    assert box.layout.yaxis4.type == "log" and box.layout.annotations[3].text == "latency (ms)"
    labels = [d.label for d in dashboards.parallel_coordinates_figure(data).data[0].dimensions]
    assert labels[-4:] == ["accuracy", "params (k)", "throughput (img/s)", "latency (ms)"]
    html = dashboards.trials_table_html(data)
    assert "<th class=\"num\">latency ms</th>" in html and ">50.00</td>" in html
    assert dashboards.hypervolume_series(data)["hypervolume"][-1] > 0

    trial = four.trials[3]
    card = _model_card({"trial": trial, "arch": Architecture(), "study": four, "dataset": "digits", "img_size": 16,
                        "in_chans": 1, "num_classes": 10})
    assert "| latency (ms, cpu) | 2.00 |" in card
    assert "| throughput (img/s, cpu) | 15000.0 |" in card and "| params | 30,000 |" in card
    assert "| accuracy (validation top-1) | 0.9400 |" in card


# ---------------------------------------------------------------------------- sorting, once, in nas.objectives
def test_nondominated_sort_partitions_rows_into_fronts_in_dominance_order():
    rng = np.random.default_rng(0)
    losses = np.round(rng.random((60, 3)), 1)  # rounded: ties and equal rows occur
    fronts = objectives.nondominated_sort(losses)
    assert sorted(np.concatenate(fronts).tolist()) == list(range(60))

    def dominates(a, b):
        return bool(np.all(a <= b) and np.any(a < b))

    assert np.array_equal(np.sort(fronts[0]), np.flatnonzero(objectives.pareto_mask(losses)))
    for k, front in enumerate(fronts):
        later = np.concatenate(fronts[k:])
        assert not any(dominates(losses[j], losses[i]) for i in front for j in later)
        if k:
            assert all(any(dominates(losses[j], losses[i]) for j in fronts[k - 1]) for i in front)
    assert objectives.nondominated_sort(np.zeros((0, 3))) == []


def test_crowding_distance_gives_the_ends_infinity_and_neighbours_gaps():
    x = np.array([[0.0, 1.0], [0.25, 0.5], [1.0, 0.0], [0.5, 0.25]])
    d = objectives.crowding_distance(x)
    assert np.isinf(d[0]) and np.isinf(d[2])
    assert d[1] == pytest.approx((0.5 - 0.0) / 1 + (1.0 - 0.25) / 1)
    assert d[3] == pytest.approx((1.0 - 0.25) / 1 + (0.5 - 0.0) / 1)
    assert np.isinf(objectives.crowding_distance(x[:2])).all()
