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
