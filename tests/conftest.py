import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared"))


# ---- the quick tier: `pytest -m quick` (a few minutes on 2 cores; the whole suite: about 12) ----
# Unit-level files, and the fast parts of the others; never a test marked slow. A test can also be
# put in the tier with @pytest.mark.quick.
QUICK_FILES = {
    "test_analyse.py", "test_backend.py", "test_configs.py", "test_data_augment.py", "test_data_mnist.py",
    "test_data_registry.py", "test_data_shd.py", "test_data_spikefile.py", "test_data_yinyang.py",
    "test_events.py", "test_losses.py", "test_portability.py", "test_train.py", "test_torch.py",
    "test_engine_reference.py", "test_cli.py", "test_readme_examples.py",
}
#: in those files, the tests that are left out of the tier (substrings of the test's id)
QUICK_EXCLUDE = ("test_xval_on_own_spike_file", "test_gradcheck_gives_a_verdict", "test_readme_example_learns",
                 "test_train_eval_plot_end_to_end", "spoken")


def pytest_collection_modifyitems(config, items):
    import pytest

    for item in items:
        if item.get_closest_marker("slow") or item.get_closest_marker("quick"):
            continue
        if item.path.name in QUICK_FILES and not any(x in item.nodeid for x in QUICK_EXCLUDE):
            item.add_marker(pytest.mark.quick)
