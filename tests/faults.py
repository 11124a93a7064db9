"""Test-only fault injection for searches that run through Ray: nothing in nas/, trainers/ or search_spaces/
knows about it.

A test starts its local Ray with :func:`ray_init_kwargs` (``ray.init(**ray_init_kwargs(plan))``): Ray runs
:func:`install` in every worker process it starts (Ray's public ``runtime_env["worker_process_setup_hook"]``),
which wraps the worker's trial body so that the trials named in ``plan`` meet their fault inside the real
trial body, where a real failure would happen:

- ``"raise"``: building the model raises ``RuntimeError("injected fault in trial N")``;
- ``"nan"``: the classifier's weights are filled with NaN before training, so the real training loop meets
  a real NaN loss.

``plan`` maps a study name to ``{trial number: fault}``. Faults decided by the driver (a trial stopped
early) are injected in the test process itself, by monkeypatching (see tests/test_early_stopping.py).
"""

from __future__ import annotations

import json
import os
from typing import Any

#: The worker environment variable that carries the plan (JSON).
PLAN_ENV = "VITNAS_TEST_FAULT_PLAN"
FAULTS = ("raise", "nan")


def ray_init_kwargs(plan: dict[str, dict[int, str]]) -> dict[str, Any]:
    """``ray.init`` keyword arguments of a local Ray whose workers inject ``plan``'s faults (as vitnas'
    ``start_ray`` starts a local Ray otherwise: loopback node address, no dashboard, quiet)."""
    import logging

    import faults
    import ray.cloudpickle

    for study, trials in plan.items():
        for number, kind in trials.items():
            assert kind in FAULTS, f"{study} trial {number}: unknown fault {kind!r}"
    ray.cloudpickle.register_pickle_by_value(faults)  # the workers need not import the tests folder
    encoded = json.dumps({study: {str(n): k for n, k in trials.items()} for study, trials in plan.items()})
    return dict(_node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False,
                logging_level=logging.ERROR, configure_logging=True,
                runtime_env={"worker_process_setup_hook": install, "env_vars": {PLAN_ENV: encoded}})


def install() -> None:
    """Ray's worker setup hook: wrap the trial body of this worker with the plan in :data:`PLAN_ENV`."""
    plan = json.loads(os.environ.get(PLAN_ENV) or "{}")
    if not plan:
        return
    import trainers
    from nas.engine import ray_backend

    run_trial, evaluate = ray_backend.run_trial, trainers.evaluate_architecture
    current: dict[str, Any] = {}

    def faulty_run_trial(config, settings, report, data, device="cpu"):
        current["fault"] = plan.get(settings["study"], {}).get(str(config.get("number")))
        current["number"] = config.get("number")
        try:
            return run_trial(config, settings, report, data, device)
        finally:
            current.clear()

    def faulty_evaluate(arch, data, config, report=None, prepare=None, **kwargs):
        if current.get("fault") == "raise":
            raise RuntimeError(f"injected fault in trial {current['number']}")
        if current.get("fault") == "nan":
            prepare = _poison
        return evaluate(arch, data, config, report=report, prepare=prepare, **kwargs)

    ray_backend.run_trial = faulty_run_trial
    trainers.evaluate_architecture = faulty_evaluate


def _poison(model) -> None:
    import torch

    with torch.no_grad():
        model.get_classifier().weight.fill_(float("nan"))
