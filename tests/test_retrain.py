"""A front the user can act on: ``vitnas retrain`` confirms designs with seeds, the confirmations are stored with
the design, the front, picks and export use them and say so, and two designs the noise does not separate are
said to be so."""

import json
import os
import subprocess
import sys

import pytest
from optuna.distributions import CategoricalDistribution

from nas.study import (
    confirmation,
    confirmations,
    create_or_load_study,
    front_records,
    not_separated,
    open_storage,
    pareto_front,
    pick_trial,
    study_status,
)
from nas.study.record import save_confirmation

PROTOCOL = {"epochs": 10, "train_images": 100, "img_size": 16, "dataset": "digits", "val_images": 50}


def _run(seed, accuracy, protocol=PROTOCOL):
    return {"seed": seed, "protocol": protocol, "accuracy": accuracy, "curve": [], "weights": f"/w{seed}.safetensors"}


@pytest.fixture
def study(tmp_path):
    st = create_or_load_study(open_storage(f"sqlite:///{tmp_path / 'c.db'}"), "c")
    # Two designs of equal size and speed: the proxy prefers trial 0, the long training prefers trial 1.
    for acc in (0.9, 0.8):
        t = st.ask({"g": CategoricalDistribution(["a", "b"])})
        t.set_user_attr("arch", {"attention": "fnet"})
        st.tell(t, [acc, 1000.0, 100.0])
    return st


def test_confirmed_accuracy_is_mean_std_and_seeds_of_the_longest_protocol(study):
    save_confirmation(study, 1, _run(0, 0.95))
    save_confirmation(study, 1, _run(1, 0.93))
    save_confirmation(study, 1, _run(0, 0.50, {**PROTOCOL, "epochs": 2}))  # a shorter protocol: not the one shown
    save_confirmation(study, 1, _run(1, 0.97))  # the same seed and protocol again replaces the run
    c = confirmation(study, 1)
    assert (c["seeds"], c["epochs"], c["accuracies"]) == (2, 10, [0.95, 0.97])
    assert c["mean"] == pytest.approx(0.96) and c["std"] == pytest.approx(0.0141421356)
    assert c["best_seed"] == 1 and c["weights"] == "/w1.safetensors"
    assert confirmation(study, 0) is None and set(confirmations(study)) == {1}


def test_the_front_and_picks_use_confirmed_values_and_say_which(study):
    assert [t.number for t in pareto_front(study)] == [0]  # by the proxy, trial 0 dominates trial 1
    before = study_status(study)
    assert before["front_by"] == "proxy" and before["hypervolume"] == before["proxy_hypervolume"]
    save_confirmation(study, 1, _run(0, 0.95))
    save_confirmation(study, 1, _run(1, 0.97))
    assert [t.number for t in pareto_front(study)] == [1]  # confirmed 0.96 beats trial 0's proxy 0.9
    assert [t.number for t in pareto_front(study, confirmed=False)] == [0]
    assert pick_trial(study, "accuracy").number == 1
    (record,) = front_records(study)
    assert record["trial"] == 1 and record["front_by"] == "confirmed" and record["accuracy"] == 0.8
    assert {"mean", "std", "seeds", "epochs"} <= set(record["confirmed"])
    assert study.get_trials()[1].values[0] == 0.8  # the stored trial keeps its proxy accuracy
    after = study_status(study)  # status counts the front and its hypervolume with the confirmed mean too
    assert after["confirmed"] == 1 and after["front_size"] == 1 and after["front_by"].startswith("confirmed")
    assert after["proxy_hypervolume"] == pytest.approx(before["hypervolume"])
    assert after["hypervolume"] > after["proxy_hypervolume"]  # 0.96 confirmed beats the proxy's best 0.9


def test_noise_rule_welch_95_percent_interval():
    a = {"mean": 0.90, "std": 0.01, "seeds": 3}
    assert not not_separated(a, {"mean": 0.80, "std": 0.01, "seeds": 3})  # 10 points apart, 1 point of noise
    assert not_separated(a, {"mean": 0.89, "std": 0.01, "seeds": 3})  # 1 point apart: within the noise
    assert not_separated(a, {"mean": 0.10, "std": 0.0, "seeds": 1})  # one seed: no estimate of the noise
    assert not_separated(a, a)


def _vitnas(*args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "nas", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=600)


@pytest.mark.slow
def test_retrain_confirms_continues_without_retraining_and_exports_the_confirmed_model(tmp_path, small_space):
    import ray

    from nas import SearchConfig, run_search
    from nas.engine.ray_backend import start_ray
    from nas.engine.retrain import RetrainConfig, run_retrain
    from nas.export import export_trial

    storage = f"sqlite:///{tmp_path / 'r.db'}"
    started = start_ray(None)  # one Ray for the search and both retrains, as a notebook would keep it
    try:
        run_search(SearchConfig(study="r", storage=storage, run_dir=str(tmp_path / "runs"), trials=2, epochs=1,
                                presets=False, config=small_space, train_subset=200, val_subset=100))
        config = RetrainConfig(study="r", storage=storage, run_dir=str(tmp_path / "runs"), top=1, epochs=2, seeds=2,
                               train_subset=200)
        events = []
        runs = run_retrain(config, progress=events.append)
        assert [e["seed"] for e in events if e["kind"] == "done"] == [0, 1]
        (number,) = runs
        assert sorted(r["seed"] for r in runs[number]) == [0, 1] and all(len(r["curve"]) == 2 for r in runs[number])
        assert all(os.path.isfile(r["weights"]) and r["weights_artifact"] for r in runs[number])
        # The same call again trains nothing: every (design, seed, protocol) is stored.
        events.clear()
        again = run_retrain(config, progress=events.append)
        assert [e["kind"] for e in events] == ["skip", "skip"] and again == runs
    finally:
        if started:
            ray.shutdown()
    rows = json.loads(_vitnas("pareto", "--study", "r", "--storage", storage, "--json", cwd=tmp_path).stdout)
    confirmed = [r for r in rows if r["confirmed"]]
    assert [r["trial"] for r in confirmed] == [number] and confirmed[0]["front_by"] == "confirmed"
    assert {"mean", "std", "seeds", "epochs"} <= set(confirmed[0]["confirmed"]) and confirmed[0]["confirmed"]["seeds"] == 2
    export_trial(storage, "r", number, tmp_path / "out")
    card = (tmp_path / "out" / "README.md").read_text()
    assert "## Confirmed" in card and "Retrained from scratch for 2 epochs on 200 training images" in card


def test_export_reads_the_artifact_store_when_the_run_folder_is_gone(tmp_path):
    import timm
    import torch
    from safetensors.torch import save_model

    import search_spaces  # noqa: F401 - registers nas_vit
    from nas.export import export_trial
    from nas.study import StudyMeta
    from nas.study.artifacts import upload_file
    from nas.study.record import set_trial_attrs
    from search_spaces import Architecture, build_model

    arch = Architecture(attention="fnet", embed_dim=32, depth=1, num_heads=2, patch_size=4)
    torch.manual_seed(0)
    model = build_model(arch, img_size=16, in_chans=1, num_classes=10).eval()
    run_dir = tmp_path / "runs"
    (run_dir / "w").mkdir(parents=True)
    save_model(model, str(run_dir / "w" / "trial_00000.safetensors"))
    ref = upload_file(str(tmp_path / "store"), run_dir / "w" / "trial_00000.safetensors")
    url = f"sqlite:///{tmp_path / 'a.db'}"
    study = create_or_load_study(open_storage(url), "a", meta=StudyMeta(dataset="digits", img_size=16, in_chans=1,
                                                                        num_classes=10, epochs=1))
    t = study.ask({"g": CategoricalDistribution(["x"])})
    set_trial_attrs(t, {"arch": arch.to_dict(), "weights": str(run_dir / "w" / "trial_00000.safetensors"),
                        "weights_artifact": ref})
    study.tell(t, [0.5, 1000.0, 100.0])
    import shutil

    shutil.rmtree(run_dir)  # the worker's disk is not this machine's
    out = export_trial(url, "a", 0, tmp_path / "out")
    reloaded = timm.create_model(f"local-dir:{out}").eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), reloaded(x))
    shutil.rmtree(tmp_path / "store")
    from nas.export import ExportError

    with pytest.raises(ExportError, match="^trial: the weights of trial 0 are missing: not at .* and weights: artifact"):
        export_trial(url, "a", 0, tmp_path / "out2")
