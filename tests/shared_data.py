"""Data that some tests read from shared/ beside the repository (../shared/data/...): real MNIST
IDX files and spoken-dev (SHD-format spoken digits).

On a clone without that folder those tests skip with a one-line reason; with
``EVENTPROP_REQUIRE_DATA=1`` (set by .ci/run, where the data is) they fail instead, so that CI
never passes by skipping them.
"""

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MNIST = SHARED_DATA / "mnist"
SPOKEN = SHARED_DATA / "spoken-dev"

_MARKERS = {MNIST: "train-images-idx3-ubyte.gz", SPOKEN: "shd_train.h5.gz"}


def have(path: Path) -> bool:
    marker = _MARKERS.get(Path(path))
    return (Path(path) / marker).is_file() if marker else Path(path).exists()


def need(path: Path) -> Path:
    """``path`` if its data is there; else skip the test (or fail it under EVENTPROP_REQUIRE_DATA=1)."""
    path = Path(path)
    if have(path):
        return path
    msg = f"needs {path.name} data in {path} (shared/ beside the repository)"
    if os.environ.get("EVENTPROP_REQUIRE_DATA") == "1":
        pytest.fail(f"{msg}, and EVENTPROP_REQUIRE_DATA=1 says it must be there", pytrace=False)
    pytest.skip(msg)
