import math

import pytest
import torch

from search_spaces import Architecture, GeneError, build_model
from trainers import (
    DataError,
    NonFiniteLossError,
    ProxyConfig,
    count_flops,
    count_params,
    evaluate_architecture,
    load_dataset,
    measure_throughput,
    peak_memory,
    train_proxy,
)
from trainers.measure import PeakMemoryTracker


def test_digits_split_is_fixed_and_disjoint(digits):
    again = load_dataset("digits")
    assert torch.equal(digits.x_train, again.x_train) and torch.equal(digits.y_val, again.y_val)
    assert digits.x_train.shape[1:] == (1, 16, 16) and digits.x_train.dtype == torch.uint8
    assert len(digits.y_train) + len(digits.y_val) == 1797
    assert len(digits.y_val) == 360 and digits.num_classes == 10
    # Stratified: every class is in both splits.
    assert set(digits.y_train.tolist()) == set(range(10)) == set(digits.y_val.tolist())
    x = digits.normalize(digits.x_train[:256])
    assert abs(x.mean().item()) < 0.5 and 0.5 < x.std().item() < 2.0


def test_subsets_are_seeded(digits):
    a = load_dataset("digits", train_subset=100, val_subset=50)
    b = load_dataset("digits", train_subset=100, val_subset=50)
    assert len(a.y_train) == 100 and len(a.y_val) == 50
    assert torch.equal(a.x_train, b.x_train)
    with pytest.raises(DataError, match="^train_subset:"):
        load_dataset("digits", train_subset=0)


@pytest.mark.parametrize("name, data_dir, match", [
    ("imagenet", None, "^dataset: unknown name 'imagenet'"),
    ("cifar10", None, "^data-dir: cifar10 needs --data-dir"),
    ("cifar10", "/nonexistent/dir", "^data-dir: '/nonexistent/dir' is not a directory"),
    ("imagefolder:/nonexistent/x", None, "^dataset: imagefolder path"),
])
def test_bad_datasets_are_clear_errors(name, data_dir, match):
    with pytest.raises(DataError, match=match):
        load_dataset(name, data_dir)


def test_missing_torchvision_files_are_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="^data-dir: fashion_mnist not found in .*pass --download"):
        load_dataset("fashion_mnist", str(tmp_path))


def _write_mnist(root, seed: int = 0):
    """A real MNIST-format folder under ``root`` (torchvision's idx layout): 60 train and 20 test images."""
    import numpy as np

    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", 60), ("t10k", 20)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (raw / f"{split}-images-idx3-ubyte").write_bytes(
            np.array([0, 0, 8, 3], dtype=np.uint8).tobytes() + np.array([n, 28, 28], dtype=">i4").tobytes() + images.tobytes())
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(
            np.array([0, 0, 8, 1], dtype=np.uint8).tobytes() + np.array([n], dtype=">i4").tobytes() + labels.tobytes())


def test_torchvision_layout_is_read(tmp_path):
    """A real MNIST-format folder (written here in torchvision's idx layout) loads through torchvision."""
    _write_mnist(tmp_path)
    data = load_dataset("mnist", str(tmp_path))
    assert data.img_size == 28 and data.in_chans == 1 and data.num_classes == 10
    assert len(data.y_train) + len(data.y_val) == 60  # the test split is never used


def test_img_size_resizes_any_data_set(tmp_path):
    """``img_size`` resizes torchvision data sets and digits alike; the split, the labels and the mean
    brightness stay those of the native images (antialiased bilinear averages pixels, it does not drop them)."""
    _write_mnist(tmp_path)
    native = load_dataset("mnist", str(tmp_path))
    small = load_dataset("mnist", str(tmp_path), img_size=14)
    assert small.img_size == 14 and small.x_train.shape[1:] == (1, 14, 14) and small.x_train.dtype == torch.uint8
    assert torch.equal(small.y_train, native.y_train) and torch.equal(small.y_val, native.y_val)
    # 2x2 antialiased shrinking of uniform noise: each pixel is near its block's mean.
    blocks = native.x_train.float().reshape(-1, 1, 14, 2, 14, 2).mean(dim=(3, 5))
    assert (small.x_train.float() - blocks).abs().mean() < 20
    assert abs(small.x_train.float().mean() - native.x_train.float().mean()) < 2
    digits8 = load_dataset("digits", img_size=8)
    assert digits8.x_train.shape[1:] == (1, 8, 8) and digits8.data_config()["input_size"] == (1, 8, 8)
    assert load_dataset("digits", img_size=16).x_train.shape[1:] == (1, 16, 16)  # its own size: unchanged
    for bad in (0, 5000, 2.5, True):
        with pytest.raises(DataError, match=r"^img_size: must be an integer in \[1, 4096\] pixels"):
            load_dataset("digits", img_size=bad)


def test_imagefolder(tmp_path):
    from PIL import Image

    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(6):
            Image.new("RGB", (20, 12), color=(i * 40, 10, 200 if c == "cat" else 0)).save(tmp_path / c / f"{i}.png")
    data = load_dataset(f"imagefolder:{tmp_path}", img_size=8)
    assert data.num_classes == 2 and data.x_train.shape[1:] == (3, 8, 8)
    assert len(data.y_train) + len(data.y_val) == 12


def test_proxy_training_learns_and_measures(digits):
    arch = Architecture(embed_dim=32, depth=2, num_heads=2, patch_size=4, stem="conv_bn")
    epochs_seen = []
    result = evaluate_architecture(arch, digits, ProxyConfig(epochs=3, seed=0),
                                   report=lambda e, rec: epochs_seen.append((e, rec["val_accuracy"])))
    assert [e for e, _ in epochs_seen] == [1, 2, 3]
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.accuracy > 0.5  # far above chance (0.1) after three epochs
    model = build_model(arch, img_size=16, in_chans=1, num_classes=10)
    assert result.params == count_params(model) == sum(p.numel() for p in model.parameters())
    assert result.flops > 0 and result.throughput > 0 and result.peak_memory > 0
    # Seeded: the same run gives the same weights.
    again = evaluate_architecture(arch, digits, ProxyConfig(epochs=3, seed=0))
    assert again.accuracy == result.accuracy
    for a, b in zip(result.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)


def test_nan_loss_raises(digits):
    arch = Architecture(embed_dim=32, depth=1, num_heads=2, patch_size=4)
    model = build_model(arch, img_size=16, in_chans=1, num_classes=10)
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="loss is nan at epoch 1, step 1"):
        train_proxy(model, digits, ProxyConfig(epochs=1))


def test_a_nan_loss_late_in_an_epoch_fails_with_its_step_although_the_check_is_deferred(digits):
    """The loop checks for a non-finite loss every ``check_every`` steps (no host synchronisation per step,
    as on a GPU); a NaN that appears at step 3 still fails the trial, naming step 3."""
    arch = Architecture(embed_dim=32, depth=1, num_heads=2, patch_size=4)
    model = build_model(arch, img_size=16, in_chans=1, num_classes=10)
    calls = {"n": 0}

    def poison_third_batch(module, inputs, output):
        calls["n"] += 1
        return output * float("nan") if calls["n"] == 3 else output

    model.head.register_forward_hook(poison_third_batch)
    with pytest.raises(NonFiniteLossError, match="loss is nan at epoch 1, step 3$"):
        train_proxy(model, digits, ProxyConfig(epochs=2, check_every=10))
    assert calls["n"] == 10  # it ran on to the next check (step 10), not to the end of the epoch


def test_measured_at_the_deployment_shape(digits, tmp_path):
    """Accuracy from the 16 px proxy; params, FLOPs, throughput and memory from the same genes at 32 px,
    through the protocol (ratio to the reference, calibrated once, cached per model)."""
    from trainers.measure import ThroughputCache

    arch = Architecture(attention="linformer", embed_dim=32, depth=1, num_heads=2, patch_size=4)
    cache = str(tmp_path / "tp.sqlite")
    cfg = ProxyConfig(epochs=1, throughput_batch=4, target_img_size=32, cache_path=cache, measure_rounds=3,
                      min_block_seconds=0.005)
    result = evaluate_architecture(arch, digits, cfg)
    at_proxy = build_model(arch, img_size=16, in_chans=1, num_classes=10)
    at_target = build_model(arch, img_size=32, in_chans=1, num_classes=10)
    assert result.proxy_params == count_params(at_proxy) < result.params == count_params(at_target)
    assert result.flops == count_flops(at_target, (1, 32, 32))
    assert result.target == {"img_size": 32, "batch": 4, "dtype": "float32", "device": "cpu"}
    d = result.throughput_detail
    assert d["cached"] is False and d["rounds"] == 3 and d["ratio"] > 0
    assert result.throughput == pytest.approx(d["ratio"] * d["reference_calibrated"])
    again = evaluate_architecture(arch, digits, cfg)
    assert again.throughput_detail["cached"] is True and again.throughput == result.throughput
    other = evaluate_architecture(arch.replace(embed_dim=64), digits, cfg)  # a new model: timed, same calibration
    assert other.throughput_detail["cached"] is False
    assert other.throughput_detail["reference_calibrated"] == d["reference_calibrated"]
    held = ThroughputCache(cache)
    assert len(held._db.execute("SELECT key FROM throughput").fetchall()) == 3  # two models, one reference
    held.close()


def test_a_target_shape_the_patch_cannot_tile_is_refused_before_training(digits):
    arch = Architecture(embed_dim=32, depth=1, num_heads=2, patch_size=4)
    with pytest.raises(GeneError, match="^patch_size: img_size 30x30 is not divisible by patch_size 4"):
        evaluate_architecture(arch, digits, ProxyConfig(epochs=1, target_img_size=30))


def test_too_slow_at_the_deployment_shape_is_a_target_shape_error():
    from trainers.measure import TargetShapeError, measure_throughput_vs_reference

    slow = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    with pytest.raises(TargetShapeError, match="over the limit of 1e-09 s"):
        measure_throughput_vs_reference(slow, slow, (3, 8, 8), batch_size=2, max_pass_seconds=1e-9)


def test_a_cpu_batch_that_would_not_fit_in_memory_is_refused_before_it_runs():
    from trainers.measure import TargetShapeError
    from trainers.proxy import _check_host_memory

    _check_host_memory(per_image=1024, batch=64)  # 64 KiB: fits anywhere
    with pytest.raises(TargetShapeError, match="^out of memory: the activations need about 1024.0 GiB"):
        _check_host_memory(per_image=2**34, batch=64)


def test_device_lock_is_exclusive_between_processes(tmp_path):
    """A measurement (exclusive) waits for a training step (shared) held by another process."""
    import subprocess
    import sys
    import time

    from trainers.measure import DeviceLock

    code = ("import sys, time; from trainers.measure import DeviceLock; "
            f"lock = DeviceLock('cpu', folder={str(tmp_path)!r}); "
            "cm = lock.shared(); cm.__enter__(); print('held', flush=True); time.sleep(3.0); cm.__exit__(None, None, None)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    lock = DeviceLock("cpu", folder=tmp_path)
    start = time.perf_counter()
    with lock.exclusive():
        waited = time.perf_counter() - start
    child.wait(timeout=30)
    lock.close()
    assert waited > 0.3  # it waited for the other process's step to end


def test_flops_of_mhsa_match_the_analytic_count():
    C, L, H, p, img, mlp = 32, 2, 2, 4, 16, 2.0
    arch = Architecture(embed_dim=C, depth=L, num_heads=H, patch_size=p, mlp_ratio=mlp, pos_encoding="none")
    model = build_model(arch, img_size=img, in_chans=1, num_classes=10)
    n = (img // p) ** 2 + 1
    per_block = 4 * n * C * C + 2 * n * n * C + 2 * n * C * int(C * mlp)
    stem = (img // p) ** 2 * C * p * p  # patchify convolution, 1 input channel
    # fvcore also counts LayerNorm (5 per element: 2 per block + the final one) over every token.
    norms = 5 * n * C * (2 * L + 1)
    expected = stem + L * per_block + norms + C * 10
    assert count_flops(model, (1, img, img)) == expected


def test_throughput_and_memory_behave():
    small = build_model(Architecture(embed_dim=32, depth=1, num_heads=2, patch_size=4), img_size=16, in_chans=1)
    big = build_model(Architecture(embed_dim=96, depth=6, num_heads=4, patch_size=2), img_size=16, in_chans=1)
    assert measure_throughput(small, (1, 16, 16), batch_size=16, runs=3) > 0
    assert peak_memory(big, (1, 16, 16), batch_size=16) > peak_memory(small, (1, 16, 16), batch_size=16)
    # Training keeps activations alive for backward: more memory than inference.
    assert peak_memory(big, (1, 16, 16), batch_size=16, train=True) > peak_memory(big, (1, 16, 16), batch_size=16)


def test_peak_memory_tracker_counts_live_tensors():
    with PeakMemoryTracker() as tracker:
        a = torch.ones(1000)  # 4000 bytes
        b = torch.ones(1000)
        del a, b
        c = torch.ones(500)
    assert tracker.peak == 8000
    assert tracker.current == 2000
    assert math.isfinite(c.sum().item())


def test_a_run_paused_and_resumed_from_its_saved_state_is_the_uninterrupted_run(digits, tmp_path):
    """Pause after epoch 2 of a 3-epoch run (schedule sized to 3), save the state with torch.save, build a
    fresh model (other initial weights), resume: the curve and the weights are the uninterrupted run's."""
    from trainers.proxy import seed_everything

    data = load_dataset("digits", train_subset=320, val_subset=100)
    arch = Architecture(embed_dim=32, depth=1, num_heads=2, patch_size=4)
    config = ProxyConfig(epochs=3, seed=3)

    def fresh(seed):
        seed_everything(seed)
        return build_model(arch, img_size=16, in_chans=1, num_classes=10)

    whole_model = fresh(0)
    whole = train_proxy(whole_model, data, config)
    paused_model, state = fresh(0), {}
    first = train_proxy(paused_model, data, config, pause_at=2, state=state)
    assert first == whole[:2] and state["epoch"] == 2 and len(state["history"]) == 2
    torch.save(state, tmp_path / "paused.pt")
    resumed_model = fresh(1)  # other initial weights and RNG: all of it must come from the state
    seen = []
    rest = train_proxy(resumed_model, data, config, report=lambda e, r: seen.append(e),
                       state=torch.load(tmp_path / "paused.pt", weights_only=False))
    assert rest == whole and seen == [3]
    for (name, a), b in zip(whole_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match=r"^pause_at: must be an integer in \[3, 2\]"):
        train_proxy(fresh(0), data, config, pause_at=2, state=torch.load(tmp_path / "paused.pt", weights_only=False))
    with pytest.raises(ValueError, match="^state: pause_at needs a dict"):
        train_proxy(fresh(0), data, config, pause_at=1)
