"""benchmarks/gpu_packing.py, the GPU packing measurement, runs its whole pipeline on the CPU with --dry-run
(packs of 1 and 2 trial processes, the trainer against a bare loop), so the script is ready for a GPU."""

from __future__ import annotations

import json

import pytest

from benchmarks import gpu_packing


@pytest.mark.slow
def test_dry_run_measures_packs_of_one_and_two_trials_and_the_bare_loop(tmp_path, capsys):
    out = tmp_path / "packing.json"
    assert gpu_packing.main(["--dry-run", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [row["k"] for row in result["packs"]] == [1, 2] and result["device"] == "cpu"
    for row in result["packs"]:
        assert len(row["trials"]) == row["k"] and row["trials_per_hour"] > 0 and row["wall_seconds"] > 0
        assert [t["seed"] for t in row["trials"]] == list(range(row["k"]))
        assert all(0 <= t["accuracy"] <= 1 and t["throughput"] > 0 for t in row["trials"])
        assert len(row["throughput_vs_alone"]) == row["k"] and all(r > 0 for r in row["throughput_vs_alone"])
    assert result["packs"][0]["speedup"] == 1.0
    # one seed trains to the same accuracy alone and packed: the proxy's statistics do not depend on packing
    assert result["packs"][1]["trials"][0]["accuracy"] == pytest.approx(result["packs"][0]["trials"][0]["accuracy"])
    assert result["trainer"]["bare_seconds"] > 0 and result["trainer"]["proxy_seconds"] > 0
    text = capsys.readouterr().out
    assert "2 per GPU" in text and "trainer alone" in text
