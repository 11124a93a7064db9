import os

import pytest

# Keep Ray and torch small on the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture
def digits():
    from trainers import load_dataset

    return load_dataset("digits")
