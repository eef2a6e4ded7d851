"""The README's test command runs on every core (``-n auto --dist loadgroup``). Tests that share an
expensive fixture (the website's build, a chapter's graded class) must stay on one worker, or each
worker makes the fixture again and the run takes far longer without failing (tests/conftest.py)."""
import pytest


def test_tests_sharing_a_fixture_stay_on_one_worker(request):
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("checks the groups of a parallel run: run with -n auto --dist loadgroup (the README's command)")
    grouped = [item for item in request.session.items if item.get_closest_marker("xdist_group")]
    if not grouped:
        pytest.skip("no test of this run shares a fixture")
    ungrouped = [item.nodeid for item in grouped if "@" not in item.nodeid]
    assert not ungrouped, (
        f"pytest-xdist did not group {len(ungrouped)} of {len(grouped)} tests that share a fixture (first "
        f"{ungrouped[0]}): this pytest ({pytest.__version__}) and pytest-xdist do not work together under "
        "--dist loadgroup. Install the versions requirements.txt pins: pip install -r requirements.txt")
