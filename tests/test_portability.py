"""A fresh clone works as it is: tests needing shared/ data skip in one line without it (and fail
under EVENTPROP_REQUIRE_DATA=1, as in CI); nothing outside the output and cache folders is ever
created; `import eventprop.torch` without torch is a one-line hint."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.quick

TESTS = Path(__file__).resolve().parent


def _pytest_on(tmp_path, body: str, require: bool):
    f = tmp_path / "test_needs_data.py"
    f.write_text("from shared_data import need\n\n\ndef test_it(tmp_path):\n" + body)
    env = dict(os.environ, PYTHONPATH=str(TESTS) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("EVENTPROP_REQUIRE_DATA", None)
    if require:
        env["EVENTPROP_REQUIRE_DATA"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(f)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)


def test_missing_shared_data_skips_with_one_line_or_fails_when_required(tmp_path):
    body = "    need(tmp_path / 'spoken-dev')\n"
    r = _pytest_on(tmp_path, body, require=False)
    assert "1 skipped" in r.stdout, r.stdout
    skip_lines = [ln for ln in r.stdout.splitlines() if ln.startswith("SKIPPED")]
    assert len(skip_lines) == 1 and "needs spoken-dev data in" in skip_lines[0], r.stdout
    r = _pytest_on(tmp_path, body, require=True)
    assert r.returncode == 1 and "1 failed" in r.stdout and "EVENTPROP_REQUIRE_DATA=1" in r.stdout, r.stdout


def test_a_mistyped_data_path_is_one_line_and_not_created(tmp_path):
    typo = tmp_path / "dta" / "shd"
    r = subprocess.run([sys.executable, "-m", "eventprop.cli", "train", "--set", "data.name=shd", "--data", str(typo),
                        "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not exist" in lines[0] and str(typo) in lines[0], r.stderr
    assert not (tmp_path / "dta").exists() and not (tmp_path / "run").exists()


def test_import_torch_without_torch_is_a_one_line_hint():
    code = ("import sys; sys.modules['torch'] = None\n"
            "try:\n    import eventprop.torch\n"
            "except ImportError as e:\n    print(type(e).__name__, '|', e, '|', e.__cause__, e.__suppress_context__)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ("MissingExtra | eventprop.torch needs PyTorch: pip install 'eventprop[torch]' | "
                                "None True"), r.stdout
