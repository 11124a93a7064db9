"""The simulator replays real samplers and schedulers over the recorded benchmark table and scores each
method's front by the truth (mean final accuracy of two full-budget seeds)."""

from __future__ import annotations

import json

import pytest

from benchmarks import simulate as sim
from nas import objectives
from search_spaces import SearchSpace
from search_spaces.genes import Architecture


@pytest.fixture(scope="module")
def table():
    t = sim.Table.load()
    space = SearchSpace().for_image(int(t.protocol["img_size"]))
    for d in t.designs:
        d.optuna_params = space.to_params(Architecture.from_dict(d.arch))
    return t, space


def _replay(table, name, seed=0, budget=None):
    t, space = table
    budget = budget or t.epochs * 4
    return sim.replay(sim.METHODS[name], t, space, seed, budget, t.bounds(), t.true_front())


def test_the_truth_is_the_mean_of_two_recorded_seeds_and_the_front_is_by_truth(table):
    t, _ = table
    assert len(t.designs) >= 10 and t.epochs == 27 and t.proxy_epochs == 6
    for d in t.designs:
        assert d.truth == pytest.approx(sum(c[-1]["val_accuracy"] for c in d.full.values()) / len(d.full))
    front = t.true_front()
    by_key = {d.key: d for d in t.designs}
    for d in t.designs:  # a design is on the true front exactly when no design dominates it by truth
        beaten = any(o.truth >= d.truth and o.params <= d.params and o.throughput >= d.throughput
                     and (o.truth, o.params, o.throughput) != (d.truth, d.params, d.throughput) for o in t.designs)
        assert (d.key in front) == (not beaten), by_key[d.key].arch


def test_a_designs_throughput_is_its_ratio_times_one_reference_speed_for_the_table(table):
    import statistics

    from benchmarks.table import read_rows

    t, _ = table
    cost = {r["key"]: r for r in read_rows(sim.DEFAULT_TABLE) if r["kind"] == "cost" and not r.get("error")}
    rows = [cost[d.key] for d in t.designs]
    assert t.reference_img_s == pytest.approx(statistics.median(r["throughput_reference_img_s"] for r in rows))
    for d, r in zip(t.designs, rows):
        assert d.throughput == pytest.approx(r["throughput_ratio"] * t.reference_img_s)
    # the ranking by throughput is the ranking by measured ratio, whatever the reference timed beside a design
    by_ratio = sorted(t.designs, key=lambda d: cost[d.key]["throughput_ratio"])
    assert [d.key for d in by_ratio] == [d.key for d in sorted(t.designs, key=lambda d: d.throughput)]


def test_full_budget_random_charges_27_epochs_a_design_and_is_scored_by_truth(table):
    t, _ = table
    run = _replay(table, "random", seed=3)
    assert [s for s, _, _ in run.trace] == [27, 54, 81, 108] and run.trials == 4 and run.stopped == 0
    assert len(set(run.order)) == 4  # every design once
    seconds = run.trace[-1][1]
    designs = [next(d for d in t.designs if d.key == k) for k in run.order]
    assert min(sum(p["seconds"] for p in c) for d in designs for c in d.full.values()) * 4 <= seconds * 1.0001
    # the front member's truth, not its observed seed, is what the hypervolume scores
    assert run.trace[-1][2] <= sim._truth_hv([d for d in t.designs if d.key in t.true_front()], t.bounds()) + 1e-12
    assert all(0.0 < hv <= 1.0 for _, _, hv in run.trace)
    assert _replay(table, "random", seed=3).order == run.order  # a seed replays the same search


def test_pareto_asha_stops_designs_early_and_spends_no_more_than_the_budget(table):
    runs = [_replay(table, "pareto_asha", seed=s, budget=27 * 4) for s in range(4)]
    assert all(r.trace[-1][0] <= 27 * 4 for r in runs)
    # epochs saved by stopping buy more designs than the budget's four full trainings
    assert any(r.stopped >= 1 and r.trials > 4 for r in runs)
    assert all(r.trials > 4 for r in runs if r.stopped)


def test_presets_come_first_and_snap_to_themselves(table):
    t, _ = table
    presets = {d.key for d in t.designs if d.preset}
    run = _replay(table, "today", budget=t.proxy_epochs * len(presets))
    assert set(run.order[:len(presets)]) == presets


def test_the_default_trains_the_smallest_design_first_and_the_former_default_does_not(table):
    t, _ = table
    smallest = min(t.designs, key=lambda d: d.params).key
    assert smallest in t.true_front()  # nothing has fewer params: on the front whatever its accuracy
    firsts = {name: [_replay(table, name, seed=s, budget=t.proxy_epochs).order[0] for s in range(4)]
              for name in (sim.DEFAULT_METHOD, "knowncost_proxy_curve_tree_spread")}
    assert firsts[sim.DEFAULT_METHOD] == [smallest] * 4
    assert firsts["knowncost_proxy_curve_tree_spread"] != [smallest] * 4  # random start-up (its sampler_attrs)


def test_retraining_the_proxy_front_charges_full_runs(table):
    t, _ = table
    run = _replay(table, "today_retrain", budget=t.epochs * 4)
    steps = [b - a for (a, _, _), (b, _, _) in zip(run.trace, run.trace[1:], strict=False)]
    assert t.epochs in steps  # the retrain of a front member costs the full protocol
    assert run.trace[-1][0] <= t.epochs * 4


def test_command_prints_the_curve_and_writes_json(tmp_path, capsys):
    out = tmp_path / "sim.json"
    assert sim.main(["--method", "random,asha", "--seeds", "2", "--budget", "108", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "random" in text and "asha" in text and "B = 108 epochs" in text
    data = json.loads(out.read_text())
    assert set(data["methods"]) == {"random", "asha"}
    lo, med, hi = data["methods"]["random"]["hv"]["1B"]
    assert 0 < lo <= med <= hi <= data["table_best_hv"] + 1e-12
    assert objectives.HVBounds.from_dict(data["bounds"])
    # a second method run into the same file is merged in beside the first
    assert sim.main(["--method", "pareto_asha", "--seeds", "2", "--budget", "108", "--json", str(out)]) == 0
    merged = json.loads(out.read_text())
    assert set(merged["methods"]) == {"random", "asha", "pareto_asha"}
    assert merged["methods"]["asha"] == data["methods"]["asha"]
    with pytest.raises(SystemExit) as e:
        sim.main(["--method", "nope", "--seeds", "1"])
    assert e.value.code == 2 and "method: unknown value 'nope'" in capsys.readouterr().err
    # the standard replay draws from every proxy seed recorded beside the table
    beside = sorted(sim.DEFAULT_TABLE.parent.glob(f"{sim.DEFAULT_TABLE.stem}_proxy_seed*.jsonl"))
    assert data["proxy_seeds"] == 1 + len(beside)
    # paired by seed: seed s of one method against seed s of the other, at B/4, B/2 and B
    both = sim.paired(merged, "random")
    assert set(both) == {"asha", "pareto_asha"}
    for name, r in both.items():
        for point, c in r.items():
            diffs = [a - b for a, b in zip(merged["methods"][name]["hv_per_seed"][point],
                                           merged["methods"]["random"]["hv_per_seed"][point])]
            assert c["ahead"] + c["level"] + c["behind"] == 2 and 0 <= c["p"] <= 1
            assert c["ahead"] == sum(d > 1e-6 for d in diffs) and c["mean"] == pytest.approx(sum(diffs) / 2)
    table_md = sim.markdown(merged, "random").splitlines()
    assert table_md[0].endswith("| against random: B/4; B/2; B |")
    c = both["asha"]["1B"]
    assert any(line.startswith("| asha |") and f"{c['ahead']}/{c['level']}/{c['behind']} p=" in line for line in table_md)
    assert sim.main(["--from-json", str(out), "--paired", "random"]) == 0
    assert "paired by seed against random (2 seeds)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        sim.main(["--from-json", str(out), "--paired", "gp"])
    assert e.value.code == 2 and "paired: 'gp' is not among the file's methods" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        sim.main(["--method", "random", "--one-proxy-seed", "--proxy-from", str(out)])
    assert e.value.code == 2 and "one-proxy-seed: not with --proxy-from" in capsys.readouterr().err


def test_a_params_budget_refuses_designs_at_no_cost_and_the_front_is_within_it(table):
    t, space = table
    limit = sorted(d.params for d in t.designs)[len(t.designs) // 2]
    by_key = {d.key: d for d in t.designs}
    run = sim.replay(sim.METHODS["random"], t, space, 2, t.epochs * 3, t.bounds(), t.true_front(limit), limit)
    assert run.refused >= 1 and all(by_key[k].params <= limit for k in run.order)
    assert [s for s, _, _ in run.trace] == [27, 54, 81]  # the refused cost no epochs
    assert all(by_key[k].params <= limit for k in t.true_front(limit))
    ks = sim.replay(sim.METHODS["knowncost"], t, space, 2, t.epochs * 3, t.bounds(), t.true_front(limit), limit)
    assert all(by_key[k].params <= limit for k in ks.order) and ks.trace[-1][0] == 81


def test_seeds_replayed_in_forked_processes_give_the_same_result(table):
    t, _ = table
    one = sim.simulate(["asha"], 2, t, 54)
    two = sim.simulate(["asha"], 2, t, 54, jobs=2)
    assert one["methods"]["asha"]["hv"] == two["methods"]["asha"]["hv"]
    assert one["methods"]["asha"]["curve"] == two["methods"]["asha"]["curve"]


def test_study_bounds_are_a_real_searchs_and_the_truth_is_still_scored_on_the_tables(table):
    from search_spaces.extremes import params_range

    t, space = table
    sb = sim.study_bounds(t, space)
    assert sb.bounds == ((0.1, 1.0), params_range(space, 16, 1, 10), objectives.THROUGHPUT_RANGE)
    # the rank rule ranks trials by the hypervolume it computes on its bounds: other bounds, other stops
    runs = {name: sim.replay(sim.METHODS["pareto_asha"], t, space, 1, t.epochs * 4, t.bounds(), t.true_front(),
                             search_bounds=b) for name, b in (("table", None), ("study", sb))}
    best = sim._truth_hv([d for d in t.designs if d.key in t.true_front()], t.bounds())
    for run in runs.values():
        assert all(0.0 <= hv <= best + 1e-12 for _, _, hv in run.trace)
    assert runs["study"].order[0] == runs["table"].order[0]  # the same random designs, in the same order
    out = sim.simulate(["random"], 1, t, 27, search_bounds="study")
    assert out["search_bounds"] == "study" and out["bounds"] == t.bounds().to_dict()
    plain = {**out, "search_bounds": "table", "methods": {"asha": out["methods"]["random"]}}
    assert set(sim.merge(plain, out)["methods"]) == {"random"}  # results under other bounds are not merged
    assert set(sim.merge({**plain, "search_bounds": "study"}, out)["methods"]) == {"random", "asha"}
    with pytest.raises(ValueError, match="search_bounds: unknown value 'x'; allowed: table, study"):
        sim.simulate(["random"], 1, t, 54, search_bounds="x")


def test_further_truth_seeds_change_the_score_and_nothing_the_replay_observes(table, tmp_path):
    from benchmarks.table import read_rows

    t, space = table
    seed0 = [r for r in read_rows(sim.DEFAULT_TABLE) if r["kind"] == "full" and r["seed"] == 0 and not r.get("error")]
    # a further seed of every design, each ending 0.1 below its seed-0 run
    extra = [{**r, "seed": 2, "final": r["final"] - 0.1} for r in seed0]
    path = tmp_path / "seed2.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in extra))
    three = sim.Table.load(sim.DEFAULT_TABLE, (path,))
    assert three.truth_seeds == 3 and t.truth_seeds == 2
    for d, e in zip(three.designs, t.designs):
        assert d.key == e.key and d.full == e.full  # the observed runs are the table's
        assert d.truth == pytest.approx((2 * e.truth + d.full[0][-1]["val_accuracy"] - 0.1) / 3)
        d.optuna_params = e.optuna_params
    a = _replay(table, "knowncost_proxy_curve", seed=1, budget=60)
    b = sim.replay(sim.METHODS["knowncost_proxy_curve"], three, space, 1, 60, t.bounds(), three.true_front())
    assert a.order == b.order and [s for s, _, _ in a.trace] == [s for s, _, _ in b.trace]
    assert b.trace[-1][2] != pytest.approx(a.trace[-1][2])  # the same front scored by the other truth
    path.write_text("".join(json.dumps(r) + "\n" for r in extra[1:]))  # one design lacks the seed
    with pytest.raises(ValueError, match="truth_from: the same further seeds are needed for all"):
        sim.Table.load(sim.DEFAULT_TABLE, (path,))


def test_a_shorter_recorded_proxy_is_its_own_run_and_a_missing_one_is_a_clear_error(table, tmp_path):
    import dataclasses

    from benchmarks.table import read_rows

    t, space = table
    assert t.proxy_lengths() == [3, 6]
    for d in t.designs:  # the 3-epoch proxy is its own run (schedule sized to 3 epochs), not the 6-epoch one cut
        assert len(d.proxy_run(3)) == 3 and d.proxy_run(6) is d.proxy and len(d.proxy) == 6
    assert sum(d.proxy_run(3)[-1]["val_accuracy"] != d.proxy[2]["val_accuracy"] for d in t.designs) > len(t.designs) // 2
    run = _replay(table, "knowncost_proxy3_nostop", budget=3 * 5)
    assert len(run.order) == 5 and run.trace[-1][0] == 15  # five designs of 3 epochs each
    # a table where one design lacks the 3-epoch proxy: the main proxy still loads, the short one is refused
    rows = read_rows(sim.DEFAULT_TABLE)
    drop = next(i for i, r in enumerate(rows) if r["kind"] == "proxy" and r.get("epochs") == 3)
    path = tmp_path / "table.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for i, r in enumerate(rows) if i != drop))
    partial = sim.Table.load(path)
    assert partial.proxy_lengths() == [6] and len(partial.designs) == len(t.designs)
    for d in partial.designs:
        d.optuna_params = space.to_params(Architecture.from_dict(d.arch))
    with pytest.raises(ValueError, match="proxy_epochs 3 is not recorded"):
        sim.replay(sim.METHODS["knowncost_proxy3_curve"], partial, space, 0, 30, partial.bounds(), partial.true_front())
    with pytest.raises(ValueError, match="proxy_epochs 4 is not recorded"):
        sim.replay(dataclasses.replace(sim.METHODS["knowncost_proxy3_curve"], proxy_epochs=4), t, space, 0, 30,
                   t.bounds(), t.true_front())


def test_the_gate_resumes_the_rungs_front_then_the_paused_designs_not_surely_dominated(table):
    import math

    from nas.engine.scheduler import dominated_by, predict_final

    t, _ = table
    budget = t.epochs * 6
    run = _replay(table, "knowncost_promote_gate", budget=budget)
    paused = math.ceil(0.25 * budget / 3)  # 3-epoch pauses until a quarter of the budget is spent
    stage = [next(d for d in t.designs if d.key == k) for k in run.order[:paused]]
    rung = {d.key: [d.proxy[2]["val_accuracy"], *d.costs()] for d in stage}
    front = sorted((stage[i].key for i in sim._front_indices(list(rung.values()))), key=lambda k: -rung[k][0])
    assert run.promoted[:len(front)] == front  # the rung's Pareto front first, most accurate first
    by_key = {d.key: d for d in stage}
    pairs = [(rung[k][0], by_key[k].proxy[-1]["val_accuracy"]) for k in front]
    full = [[by_key[k].proxy[-1]["val_accuracy"], *by_key[k].costs()] for k in front]
    others = sorted((k for k in rung if k not in front), key=lambda k: -rung[k][0])
    through = [k for k in others if not dominated_by([predict_final(pairs, rung[k][0], 0.999)[1], *rung[k][1:]], full)]
    assert run.promoted[len(front):] == through  # then those the gate lets through, most accurate first
    assert 0 < len(through) < len(others)  # on this seed it lets some through and leaves others stopped
    assert run.stopped >= len(others) - len(through)


def test_thaw_resumes_the_gates_designs_only_when_they_beat_a_new_design_per_epoch(table):
    from nas.engine.scheduler import dominated_by, predict_final

    t, _ = table
    budget = t.epochs * 6
    gate, thaw = _replay(table, "knowncost_promote_gate", budget=budget), _replay(table, "knowncost_promote_thaw", budget=budget)
    paused = -(-budget // 12)  # 3-epoch pauses until a quarter of the budget is spent
    stage = [next(d for d in t.designs if d.key == k) for k in thaw.order[:paused]]
    assert thaw.order[:paused] == gate.order[:paused]  # the same search until the promotion
    rung = {d.key: [d.proxy[2]["val_accuracy"], *d.costs()] for d in stage}
    front = sorted((stage[i].key for i in sim._front_indices(list(rung.values()))), key=lambda k: -rung[k][0])
    assert thaw.promoted[:len(front)] == front == gate.promoted[:len(front)]  # the front resumes at once
    by_key = {d.key: d for d in stage}
    pairs = [(rung[k][0], by_key[k].proxy[-1]["val_accuracy"]) for k in front]
    full = [[by_key[k].proxy[-1]["val_accuracy"], *by_key[k].costs()] for k in front]
    through = {k for k in rung if k not in front
               and not dominated_by([predict_final(pairs, rung[k][0], 0.999)[1], *rung[k][1:]], full)}
    thawed = thaw.promoted[len(front):]
    assert set(thawed) <= through  # only what the gate lets through may wait and resume
    assert len(thawed) < len(through)  # new designs won the comparison for some: they stay stopped
    assert thaw.stopped >= len(rung) - len(front) - len(thawed)
    assert set(thaw.order[paused:]) - set(gate.order[paused:])  # the epochs saved went to other new designs


def test_promotion_pauses_runs_at_the_rung_and_resumes_only_the_rungs_pareto_front(table):
    import dataclasses

    t, space = table
    run = _replay(table, "knowncost_promote_resume", budget=60)  # the rung's stage: the first 15 epochs
    first = [e for e, _, _ in run.trace[:5]]
    assert first == [3, 6, 9, 12, 15]  # five designs paused after 3 epochs of the 6-epoch proxy
    stage = [next(d for d in t.designs if d.key == k) for k in run.order[:5]]
    rows = [[d.proxy[2]["val_accuracy"], *d.costs()] for d in stage]  # epoch 3 of the 6-epoch run
    front = {stage[i].key for i in sim._front_indices(rows)}
    assert set(run.promoted) == front and 0 < len(front) < 5
    by_key = {d.key: d for d in stage}
    accs = [by_key[k].proxy[2]["val_accuracy"] for k in run.promoted]
    assert accs == sorted(accs, reverse=True)  # most accurate first
    # each promoted design resumes: 3 more epochs, not 6
    assert [e for e, _, _ in run.trace[5:5 + len(front)]] == [15 + 3 * (j + 1) for j in range(len(front))]
    assert run.stopped >= 5 - len(front)  # the rest stopped at the rung
    assert run.trace[-1][0] <= 60 and run.order[5:] and not set(run.order[5:]) & set(run.order[:5])
    # restarting instead charges the whole 6-epoch run per promoted design
    restart = _replay(table, "knowncost_promote_restart", budget=60)
    k = len(restart.promoted)
    assert [e for e, _, _ in restart.trace[5:5 + k]] == [15 + 6 * (j + 1) for j in range(k)]
    with pytest.raises(ValueError, match="resume needs promote_at"):
        sim.replay(dataclasses.replace(sim.METHODS["knowncost_promote_resume"], promote_at=0.0), t, space, 0, 30,
                   t.bounds(), t.true_front())


def test_further_proxy_seeds_are_drawn_per_design_and_replay_seed(table, tmp_path):
    """With ``proxy_from`` each replayed design trains under one of the recorded proxy seeds, drawn per design and
    replay seed. A second seed whose curves are the first's replays exactly as the table alone (the draw disturbs
    no other random stream); a second seed where one design learns worse changes exactly the replays that draw
    it for that design; the table's designs keep their own proxy afterwards."""
    from benchmarks.table import read_rows

    t, space = table
    rows = [r for r in read_rows(sim.DEFAULT_TABLE) if r["kind"] == "proxy" and r.get("seed", 0) == 0
            and int(r["epochs"]) == t.proxy_epochs]

    def load(name, rows):
        (tmp_path / name).write_text("".join(json.dumps({**r, "seed": 1}) + "\n" for r in rows))
        other = sim.Table.load(proxy_from=(tmp_path / name,))
        for d in other.designs:
            d.optuna_params = space.to_params(Architecture.from_dict(d.arch))
        return other

    def run(tab, seed):
        return sim.replay(sim.METHODS["knowncost_proxy_curve"], tab, space, seed, t.epochs * 2, tab.bounds(),
                          tab.true_front())

    twin = load("same.jsonl", rows)
    assert twin.proxy_seeds == 2 and all(sorted(d.proxies) == [0, 1] for d in twin.designs)
    plain = {seed: _replay(table, "knowncost_proxy_curve", seed=seed, budget=t.epochs * 2) for seed in range(4)}
    for seed in (0, 1):
        r = run(twin, seed)
        assert (r.order, r.trace) == (plain[seed].order, plain[seed].trace)
    first = plain[0].order[0]  # the known-cost sampler's first proposal: the design of fewest params
    assert all(p.order[0] == first for p in plain.values())
    worse = load("worse.jsonl", [{**r, "curve": [{**c, "val_accuracy": c["val_accuracy"] - 0.2} for c in r["curve"]]}
                                 if r["key"] == first else r for r in rows])
    draws = {seed: sim.random.Random(f"proxy/{seed}/{first}").choice([0, 1]) for seed in plain}
    assert set(draws.values()) == {0, 1}  # over these replay seeds the first design trains under both
    for seed, pick in draws.items():
        r = run(worse, seed)
        assert (r.order == plain[seed].order) == (pick == 0)  # a worse first design steers the sampler elsewhere
    assert [d.proxy for d in worse.designs] == [d.proxies[0] for d in worse.designs]  # restored after each replay
    (tmp_path / "part.jsonl").write_text("".join(json.dumps({**r, "seed": 1}) + "\n" for r in rows[:5]))
    with pytest.raises(ValueError, match="proxy_from: the same further proxy seeds are needed for all"):
        sim.Table.load(proxy_from=(tmp_path / "part.jsonl",))


def test_a_missing_further_seed_table_is_one_line_and_exit_2(tmp_path, capsys):
    for flag in ("--proxy-from", "--truth-from"):
        with pytest.raises(SystemExit) as exc:
            sim.main(["--method", "default", "--seeds", "1", flag, str(tmp_path / "none.jsonl")])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.endswith(f"error: {flag[2:]}: no such file {str(tmp_path / 'none.jsonl')!r}")  # one line, no traceback


def test_a_replay_is_the_same_whatever_the_global_generators_held_before(table):
    """Ray's AsyncHyperBandScheduler draws each trial's bracket from numpy's global generator; the replay seeds
    it (and torch's) from the replay seed, so a row of the comparison does not depend on the process or on the
    replays run before it."""
    import numpy as np

    t, _ = table
    runs = []
    for noise in (1, 2):
        np.random.seed(noise)
        np.random.random(noise)
        runs.append(_replay(table, "hyperband", seed=3, budget=t.epochs * 3))
    assert runs[0].trials >= 3 and runs[0].trace
    assert (runs[0].order, runs[0].trace) == (runs[1].order, runs[1].trace)
