import os

import pytest

# Keep Ray and torch small on the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture
def digits():
    from trainers import load_dataset

    return load_dataset("digits")


#: A small space of small designs, for end-to-end searches that test the search machinery, not the space.
SMALL_SPACE = "attention: [mhsa, fnet, mixer]\nembed_dim: [32]\ndepth: [1, 2]\nnum_heads: [2]\npatch_size: [4]\n"


@pytest.fixture
def small_space(tmp_path):
    """Path of a search-space file holding :data:`SMALL_SPACE` (cheap trials, quick parameter bounds)."""
    path = tmp_path / "small_space.yaml"
    path.write_text(SMALL_SPACE)
    return str(path)


#: Fixtures that run a real search through Ray (tens of seconds each on 2 cores): the tests that use them are
#: marked slow, so ``pytest -m "not slow"`` is the quick lane of the edit-test loop.
SLOW_FIXTURES = {"searched", "deployed", "faulty", "one_ray"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
