"""An end-to-end ResNet18 run of the real CLI on mnist_5k, above test_e2e.py's floor.

A file of its own: it is the suite's slowest test, and pytest-xdist (--dist loadfile) runs one file in one
worker, so here it runs beside test_e2e.py's other runs instead of after them.

One strategy, bald: it is the one that drives everything ResNet18-specific through a whole run (training
with BatchNorm, the recalibration, the dropout head sampled K times over the frozen trunk, evaluation).
What differs between strategies is how the K predictions are scored, which does not depend on the model:
test_e2e.py runs LeNet end to end with each strategy, and test_strategies.py checks each score's values.
Each extra ResNet18 run cost about 75 s of the suite on 2 cores.
"""
from test_e2e import check_model_learns


def test_resnet18_learns_with_bald(cli):
    check_model_learns(cli, "resnet18", "bald")
