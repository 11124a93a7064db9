"""benchmarks.live turns a simulated method into the real search's settings and reports live runs beside
the simulator's quartiles (the searches themselves are a benchmark, not part of the suite)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import live
from benchmarks import simulate as sim


@pytest.fixture(scope="module")
def table():
    return sim.Table.load()


def test_the_default_and_random_map_to_the_searches_they_replay(table, tmp_path):
    budget = sim.default_budget(table)
    default = live.search_config(sim.METHODS[sim.DEFAULT_METHOD], table, 2, budget, tmp_path, "data")
    default.validate()
    assert (default.sampler, default.scheduler, default.early_stopping) == ("knowncost", "curve", True)
    assert default.epochs == table.proxy_epochs and default.epoch_budget == budget and default.seed == 2
    assert (default.img_size, default.train_subset, default.val_subset) == (16, 2000, 1000)
    assert default.storage == f"sqlite:///{Path(tmp_path) / f'live-{sim.DEFAULT_METHOD}-s2.db'}"
    # the replayed promotion is the search's own default: rung at half the proxy, B/3, the front, then the gate
    fresh = type(default)()
    assert (default.promote_at, default.promote_fronts, default.promote_gate, default.rung_epochs) == (
        fresh.promote_at, fresh.promote_fronts, fresh.promote_gate, sim.METHODS[sim.DEFAULT_METHOD].proxy_epochs)
    random = live.search_config(sim.METHODS["random"], table, 0, budget, tmp_path, "data")
    assert (random.sampler, random.early_stopping, random.presets, random.epochs) == ("random", False, False, 27)
    assert random.promote_at == 0 and random.rung_epochs is None
    with pytest.raises(ValueError, match="promote_restart is simulated only"):  # a restart cannot be resumed
        live.search_config(sim.METHODS["knowncost_promote_restart"], table, 0, budget, tmp_path, "data")
    with pytest.raises(ValueError, match="moasha is simulated only"):
        live.search_config(sim.METHODS["moasha"], table, 0, budget, tmp_path, "data")
    with pytest.raises(ValueError, match="tree_spread is simulated only"):  # a sampler setting the search lacks
        live.search_config(sim.METHODS["knowncost_proxy_curve_tree_spread"], table, 0, budget, tmp_path, "data")


def test_the_report_counts_live_runs_inside_the_simulators_quartiles():
    runs = {f"random/{s}/162": {"method": "random", "seed": s, "budget_epochs": 162, "truth_hv": hv}
            for s, hv in enumerate([0.30, 0.35, 0.50])}
    simulated = {"budget_epochs": 162, "methods": {"random": {"hv": {"1B": [0.25, 0.32, 0.40]}}}}
    text = live.report({"runs": runs}, simulated)
    assert "| random | 0.300, 0.350, 0.500 | 0.350 | 0.320 (0.250-0.400) | 2 of 3 |" in text
    # another budget than the simulator's: no comparison is claimed
    assert "| — | — |" in live.report({"runs": runs}, {**simulated, "budget_epochs": 108})


def test_the_report_places_each_live_run_among_the_replays():
    runs = {f"random/{s}/162": {"method": "random", "seed": s, "budget_epochs": 162, "truth_hv": hv}
            for s, hv in enumerate([0.10, 0.30, 0.90])}
    replays = [i / 10 for i in range(1, 9)]  # 0.1 .. 0.8
    simulated = {"budget_epochs": 162, "methods": {"random": {"hv": {"1B": [0.275, 0.45, 0.625]},
                                                              "final_hv": replays}}}
    assert live.percentile(0.90, replays) == 100 and live.percentile(0.05, replays) == 0
    assert live.percentile(0.30, replays) == pytest.approx(100 * 2.5 / 8)  # a tie counts half
    assert "| 1 of 3 | 6, 31, 100 |" in live.report({"runs": runs}, simulated)


def test_rescore_scores_a_stored_study_s_front_by_the_tables_truth(table, tmp_path):
    import optuna

    from nas import objectives
    from nas.study import pareto_front

    picks = sorted(table.designs, key=lambda d: -d.truth)[:4] + sorted(table.designs, key=lambda d: d.params)[:2]
    storage = f"sqlite:///{tmp_path / 'live-random-s0.db'}"
    study = optuna.create_study(study_name="live-random-s0", storage=storage,
                                directions=["maximize", "minimize", "maximize"])
    for i, d in enumerate(picks):  # what a search observed: a made-up accuracy, a throughput off by up to 20%
        study.add_trial(optuna.trial.create_trial(
            values=[0.5 + 0.05 * i, d.params, d.throughput * (0.8 + 0.08 * i)],
            distributions={}, params={}, user_attrs={"arch": d.arch, "curve": [{}] * 27}))
    out = {"runs": {"random/0/162": {"method": "random", "seed": 0, "budget_epochs": 162, "truth_hv": -1.0}}}
    truth = live.Truth(table, tmp_path / "truth.jsonl", "data")
    assert live.rescore(out, table, truth, tmp_path) == []
    run = out["runs"]["random/0/162"]
    front = pareto_front(optuna.load_study(study_name="live-random-s0", storage=storage))
    by_key = {d.key: d for d in table.designs}
    members = [by_key[m["key"]] for m in run["front"]]
    assert [m["trial"] for m in run["front"]] == [t.number for t in front]  # chosen by what was observed
    assert run["truth_hv"] == pytest.approx(objectives.normalised_hypervolume(
        [[d.truth, d.params, d.throughput] for d in members], table.bounds()))  # scored by the truth
    assert run["epochs"] == 27 * len(picks) and run["trials"] == len(picks)
    assert not (tmp_path / "truth.jsonl").exists()  # every member was in the table: nothing trained
    gone = {"runs": {"random/1/162": {"method": "random", "seed": 1, "budget_epochs": 162, "truth_hv": 0.3}}}
    assert live.rescore(gone, table, truth, tmp_path) == ["random/1/162"] and gone["runs"]["random/1/162"]["truth_hv"] == 0.3


def test_table_only_runs_are_scored_again_by_a_wider_truth_and_others_are_left_out(table, tmp_path):
    import dataclasses

    from nas import objectives

    picks = sorted(table.designs, key=lambda d: d.params)[:3]
    front = [{"key": d.key, "params": d.params, "throughput": d.throughput} for d in picks]
    out = {"runs": {"m@table/0/162": {"method": "m (table only)", "seed": 0, "budget_epochs": 162, "truth_hv": 0.1,
                                      "front": front},
                    "m/0/162": {"method": "m", "seed": 0, "budget_epochs": 162, "truth_hv": 0.1,
                                "front": [*front, {"key": "outside", "params": 1.0, "throughput": 1.0}]}}}
    wider = dataclasses.replace(table, designs=[dataclasses.replace(d, truth=d.truth - 0.01) for d in table.designs])
    scored = live.by_wider_truth(out, wider)
    assert list(scored["runs"]) == ["m@table/0/162"]  # a front member outside the table has no wider truth
    assert scored["runs"]["m@table/0/162"]["truth_hv"] == pytest.approx(objectives.normalised_hypervolume(
        [[d.truth - 0.01, d.params, d.throughput] for d in picks], wider.bounds()))
    assert out["runs"]["m@table/0/162"]["truth_hv"] == 0.1  # the stored results are not changed


def test_truth_from_without_report_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        live.main(["--truth-from", str(tmp_path / "seed2.jsonl"), "--out", str(tmp_path / "out.json")])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("error: truth-from: only with --report (it "
                                                                       "scores the stored table-only runs again; nothing is run)")
    assert not (tmp_path / "out.json").exists()


def test_table_only_makes_the_tables_designs_the_knowncost_candidates_and_undoes(table):
    from types import SimpleNamespace

    import optuna

    from nas.engine import search
    from search_spaces import SearchSpace

    space = SearchSpace().for_image(16)
    driver = SimpleNamespace(space=space, target_img_size=16, img_size=16, channels=(1, 10))
    meta = {}  # a study's user attributes: default bounds
    original = search._cost_context
    undo = live._table_only(table)
    try:
        cfg = SimpleNamespace(sampler="knowncost", presets=False, max_params=None, min_throughput=None)
        ctx = search._cost_context(cfg, driver, meta)
        assert len(ctx.candidates) == len(table.designs)
        assert all(space.contains(space.suggest(optuna.trial.FixedTrial(c))) for c in ctx.candidates[:5])
        assert search._cost_context(SimpleNamespace(sampler="random"), driver, meta) is None
    finally:
        undo()
    assert search._cost_context is original



def test_table_only_with_a_method_that_is_not_knowncost_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        live.main(["--method", "random", "--table-only", "--out", str(tmp_path / "out.json")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith("table-only: restricts a knowncost search; random samples with random")
    assert not (tmp_path / "out.json").exists()  # nothing run, nothing written
