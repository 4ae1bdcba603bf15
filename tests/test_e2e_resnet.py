"""End-to-end ResNet18 runs of the real CLI on mnist_5k with each strategy, above test_e2e.py's floor.

A file of their own: they are the suite's slowest tests, and pytest-xdist (--dist loadfile) runs one file
in one worker, so here they run beside test_e2e.py's other runs instead of after them.
"""
import pytest

from test_e2e import STRATEGIES, check_model_learns


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_resnet18_learns_with_each_strategy(cli, strategy):
    check_model_learns(cli, "resnet18", strategy)
