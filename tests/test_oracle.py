"""The oracle: seeded label noise fixed per image, exact rates, the adversarial annotator, the records it
leaves in a run folder, and --resume with remembered answers."""
import json
import shutil

import pandas as pd
import pytest
import torch

from config import Config, ConfigError
from conftest import SMALL, Run
from oracles import CleanOracle, NoisyOracle, make_oracle
from oracles.simulated import derangement
from results import TIMING_COLUMNS
from rng import torch_generator

C = 10
N = 5000


def _pool(n=N, seed=0):
    return torch.randint(0, C, (n,), generator=torch.Generator().manual_seed(seed))


def _oracle(kind, rate=0.3, seed=42, pool_y=None, initial=None, noisy_initial=False):
    cfg = Config(label_noise=kind, label_noise_rate=rate, seed=seed, label_noise_initial=noisy_initial)
    return make_oracle(cfg, _pool() if pool_y is None else pool_y, C, initial=initial)


def _ask(oracle, positions, seed=0):
    """Answers for positions, with random model probabilities when the oracle needs predictions."""
    probs = None
    if oracle.needs_predictions:
        probs = torch.rand(len(positions), C, generator=torch.Generator().manual_seed(seed)).softmax(1)
    return oracle(positions, probs)


KINDS = ["symmetric", "pair", "adversarial"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.37, 1.0])
def test_exactly_round_r_times_pool_positions_are_corrupted(kind, rate):
    oracle = _oracle(kind, rate)
    everything = torch.arange(N)
    given = _ask(oracle, everything)
    wrong = given != oracle.pool_y[everything]
    assert int(wrong.sum()) == round(rate * N)
    marked = getattr(oracle, "marked_P", torch.zeros(N, dtype=torch.bool))  # rate 0: a clean oracle, none marked
    assert torch.equal(wrong, marked[everything])


@pytest.mark.parametrize("kind", KINDS)
def test_fraction_among_queried_items_is_the_rate(kind):
    """A large query (half the pool) sees the rate up to hypergeometric sampling error."""
    pool_y = _pool(20000)
    oracle = _oracle(kind, 0.2, pool_y=pool_y)
    queried = torch.randperm(20000, generator=torch.Generator().manual_seed(5))[:10000]
    frac = float((_ask(oracle, queried) != pool_y[queried]).float().mean())
    assert abs(frac - 0.2) < 4 * (0.2 * 0.8 / 10000 / 2) ** 0.5  # 4 s.d. (finite-population factor 1/2)


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_answers_other_seed_other_corrupted_set(kind):
    positions = torch.arange(N)
    a, b, other = _oracle(kind, seed=1), _oracle(kind, seed=1), _oracle(kind, seed=2)
    assert torch.equal(_ask(a, positions), _ask(b, positions))
    assert torch.equal(a.marked_P[positions], b.marked_P[positions])
    overlap = (a.marked_P[positions] & other.marked_P[positions]).float().mean()
    assert not torch.equal(a.marked_P[positions], other.marked_P[positions])
    assert abs(float(overlap) - 0.3 * 0.3) < 0.03  # independent draws


@pytest.mark.parametrize("kind", KINDS)
def test_corruption_is_fixed_per_image(kind):
    """Asking again, in another order, mixed with others, after the model changed: the same answer."""
    oracle = _oracle(kind)
    first = torch.arange(0, 1000)
    answers = _ask(oracle, first, seed=1)
    again = torch.cat([torch.arange(2000, 2500), first.flip(0)])
    later = _ask(oracle, again, seed=2)  # other probabilities: another model
    assert torch.equal(later[500:], answers.flip(0))


def test_pair_is_a_seeded_permutation_without_fixed_point():
    for seed in range(50):
        perm = derangement(C, torch_generator(seed, "label_noise", "pair"))
        assert sorted(perm.tolist()) == list(range(C))
        assert not (perm == torch.arange(C)).any()
    assert torch.equal(derangement(2, torch.Generator().manual_seed(0)), torch.tensor([1, 0]))
    oracle = _oracle("pair", 0.5)
    positions = torch.arange(N)
    bad = oracle.marked_P[positions]
    given, true = oracle(positions), oracle.pool_y[positions]
    assert torch.equal(given[bad], oracle.pair[true[bad]])  # a consistent confusion
    assert torch.equal(given[~bad], true[~bad])


def test_symmetric_never_true_and_roughly_uniform_over_the_other_classes():
    pool_y = torch.zeros(30000, dtype=torch.int64)  # every image of class 0
    oracle = _oracle("symmetric", 1.0, pool_y=pool_y)
    given = oracle(torch.arange(30000))
    assert (given != 0).all()
    counts = torch.bincount(given, minlength=C)[1:].float()
    expected = 30000 / (C - 1)
    assert ((counts - expected).abs() < 5 * expected ** 0.5).all(), counts  # 5 s.d. per class


def test_adversarial_follows_the_model_and_never_gives_the_true_class():
    pool_y = torch.tensor([0, 1, 2, 3])
    oracle = NoisyOracle(pool_y, 4, "adversarial", 1.0, seed=0)
    assert oracle.needs_predictions
    probs = torch.tensor([[0.9, 0.05, 0.03, 0.02],   # model right: the runner-up, class 1
                          [0.1, 0.2, 0.6, 0.1],      # model wrong (2): confirmed
                          [0.0, 0.0, 1.0, 0.0],      # all mass on the truth: the lowest other class
                          [0.3, 0.3, 0.1, 0.3]])     # ties among wrong classes: the lowest
    assert oracle(torch.arange(4), probs).tolist() == [1, 2, 0, 0]
    with pytest.raises(ValueError, match="probabilities"):
        NoisyOracle(pool_y, 4, "adversarial", 1.0, seed=0)(torch.arange(4))
    # remembered: the model changes, the answers do not, and no probabilities are needed any more
    assert oracle(torch.arange(4), torch.eye(4)).tolist() == [1, 2, 0, 0]
    assert oracle(torch.arange(4)).tolist() == [1, 2, 0, 0]


def test_adversarial_remembers_answers_given_before_a_resume():
    oracle = NoisyOracle(torch.tensor([0, 1, 2]), 3, "adversarial", 1.0, seed=0)
    oracle.remember(torch.tensor([0, 2]), torch.tensor([2, 1]))
    assert oracle(torch.tensor([2, 0])).tolist() == [1, 2]


@pytest.mark.parametrize("kind,rate", [("none", 0.5), *[(k, 0.0) for k in KINDS]])
def test_rate_zero_or_no_noise_gives_clean_labels(kind, rate):
    pool_y = _pool()
    oracle = make_oracle(Config(label_noise=kind, label_noise_rate=rate), pool_y, C)
    assert isinstance(oracle, CleanOracle) and not oracle.needs_predictions
    assert torch.equal(oracle(torch.arange(N)), pool_y)
    assert not isinstance(oracle, NoisyOracle)  # no position is marked to lie


@pytest.mark.parametrize("kind", ["symmetric", "pair"])
def test_label_noise_initial_on_and_off(kind):
    initial = torch.arange(0, 1000)
    clean_first = _oracle(kind, 0.5, initial=initial)
    noisy_first = _oracle(kind, 0.5, initial=initial, noisy_initial=True)
    assert not clean_first.marked_P[initial].any()
    assert torch.equal(clean_first(initial), clean_first.pool_y[initial])
    assert abs(float(noisy_first.marked_P[initial].float().mean()) - 0.5) < 0.06
    rest = torch.arange(1000, N)  # the queried items lie in the same way either way
    assert torch.equal(clean_first(rest), noisy_first(rest))


def test_adversarial_initial_set_is_refused_with_one_line():
    with pytest.raises(ConfigError, match="adversarial") as err:
        Config(label_noise="adversarial", label_noise_rate=0.1, label_noise_initial=True).validate()
    assert "\n" not in str(err.value)
    Config(label_noise="adversarial", label_noise_rate=0.1).validate()
    Config(label_noise="symmetric", label_noise_rate=0.1, label_noise_initial=True).validate()


def test_adversarial_initial_set_refused_before_any_folder(cli, tmp_path):
    rc, _, err, runs = cli(*SMALL, "--label_noise", "adversarial", "--label_noise_rate", "0.2",
                           "--label_noise_initial")
    assert rc == 2 and err.count("\n") == 1 and "adversarial" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# ------------------------------------------------------------------------------------------ end to end

# --device cpu: runs are bit-reproducible on the CPU (README); CUDA kernels need not be (seen on an H200).
E2E = ["--device", "cpu", "--dataset", "mnist_5k", "--no-wandb", "--num_valid", "100", "--n_init_labeled", "20", "--n_query", "10",
       "--n_round", "2", "--epochs", "1", "--min_steps", "30", "--threads", "1"]


def _check_records(run: Run, initial_noisy: bool):
    acq, rounds = run.acquired, run.rounds
    assert {"label", "true_label"} <= set(acq.columns)
    assert list(rounds.columns[:3]) == ["round", "n_labeled", "n_corrupted"]
    from data import load_dataset
    dataset = load_dataset("mnist_5k", "data")
    assert (acq["true_label"] == dataset.train_y[acq["dataset_index"].tolist()].numpy()).all()
    wrong = acq["label"] != acq["true_label"]
    if not initial_noisy:
        assert not wrong[acq["round"] == -1].any()
    for row in rounds.itertuples():
        trained_on = acq["round"] < row.round  # initial set (-1) and queries after rounds before this one
        assert row.n_corrupted == int(wrong[trained_on].sum())
        assert row.n_labeled == int(trained_on.sum())
    return wrong


@pytest.mark.parametrize("kind,strategy", [("symmetric", "random"), ("pair", "random"),
                                           ("adversarial", "entropy")])
def test_end_to_end_records_given_and_true_labels(cli, kind, strategy):
    initial = ["--label_noise_initial"] if kind == "symmetric" else []
    rc, _, err, [run] = cli(*E2E, "--strategy", strategy, "--mc_samples", "2", "--label_noise", kind,
                            "--label_noise_rate", "0.5", *initial)
    assert rc == 0, err
    wrong = _check_records(run, initial_noisy=bool(initial))
    assert wrong[run.acquired["round"] >= 0].sum() > 0
    if kind == "pair":
        given = run.acquired[wrong]
        assert given.groupby("true_label")["label"].nunique().max() == 1  # one confusion per class
    assert run.rounds["n_corrupted"].iloc[-1] == wrong.sum()


def test_end_to_end_test_accuracy_uses_clean_labels(cli, tmp_path, monkeypatch):
    """Test (and validation) metrics are computed against the dataset's labels, whatever the oracle says."""
    import loop
    seen = []
    original = loop.evaluate

    def spy(model, images, idx, y, chunk, **kwargs):
        seen.append((images, idx.clone(), y.clone()))
        return original(model, images, idx, y, chunk, **kwargs)
    monkeypatch.setattr(loop, "evaluate", spy)
    rc, _, err, [run] = cli(*E2E, "--n_round", "1", "--label_noise", "symmetric", "--label_noise_rate", "1.0",
                            "--label_noise_initial")
    assert rc == 0, err
    assert (run.acquired["label"] != run.acquired["true_label"]).all()
    from data import load_dataset
    dataset = load_dataset("mnist_5k", "data")
    for images, idx, y in seen:
        if idx.numel() == 100:  # validation (--num_valid 100): the train split's own labels
            assert torch.equal(y.cpu(), dataset.train_y[idx.cpu()])
        else:  # the test split
            assert torch.equal(y.cpu(), dataset.test_y) and torch.equal(idx.cpu(), torch.arange(len(y)))
    assert len(seen) == 2 * 2  # validation and test, rounds 0 and 1
    # every label is wrong: a model that learnt them is worse than chance on the clean test labels
    assert run.rounds["test_acc"].iloc[-1] < 0.2


def assert_resume_reproduces(cli, folder, full):
    """--resume of ``folder`` finishes with the uninterrupted run's metrics and acquired.csv."""
    rc, _, err, _ = cli("--resume", folder, output_dir=folder.parent)
    assert rc == 0, err
    pd.testing.assert_frame_equal(Run(folder).rounds.drop(columns=TIMING_COLUMNS),
                                  full.rounds.drop(columns=TIMING_COLUMNS))
    assert (folder / "acquired.csv").read_text() == (full.path / "acquired.csv").read_text()


def test_resume_with_adversarial_noise_reproduces_the_uninterrupted_run(cli, tmp_path):
    args = [*E2E, "--strategy", "entropy", "--mc_samples", "2", "--label_noise", "adversarial",
            "--label_noise_rate", "0.5", "--n_round", "3"]
    rc, _, err, [full] = cli(*args, output_dir=tmp_path / "full")
    assert rc == 0, err
    # A run cut after round 1, between its acquired.csv and rounds.csv writes
    cut = tmp_path / "cut" / "run"
    cut.mkdir(parents=True)
    for name in ("config.json", "acquired.csv"):
        shutil.copy(full.path / name, cut / name)
    full.rounds.head(2).to_csv(cut / "rounds.csv", index=False)
    assert_resume_reproduces(cli, cut, full)
    assert json.loads((cut / "config.json").read_text())["label_noise"] == "adversarial"


# ------------------------------------------------------------------------------------------------ report

def _fake_run(parent, strategy, seed, acc, n_corrupted, **config):
    """A finished run folder written by hand: 20 then 30 labels, the final model trained on n_corrupted
    wrong labels."""
    from config import DEFAULT_CONFIG
    from results import ROUND_COLUMNS
    folder = parent / f"{strategy}_{config.get('label_noise', 'none')}_{config.get('label_noise_rate', 0)}_{seed}"
    folder.mkdir(parents=True)
    cfg = {**DEFAULT_CONFIG, "dataset": "mnist_5k", "strategy": strategy, "seed": seed, "n_init_labeled": 20,
           "n_query": 10, "n_round": 1, **config}
    (folder / "config.json").write_text(json.dumps(cfg))
    rows = [{**{c: 0.0 for c in ROUND_COLUMNS}, "round": r, "n_labeled": 20 + 10 * r, "test_acc": a,
             "n_corrupted": n, "n_scored": 100 * (1 - r)} for r, (a, n) in enumerate([(0.5, 0), (acc, n_corrupted)])]
    pd.DataFrame(rows, columns=ROUND_COLUMNS).to_csv(folder / "rounds.csv", index=False)
    (folder / "summary.json").write_text(json.dumps({"status": "complete"}))


def test_report_groups_by_label_noise_and_plots_accuracy_against_corrupted_labels(tmp_path):
    import report
    runs_dir = tmp_path / "runs"
    for strategy in ("random", "bald"):
        for seed in (1, 2):
            _fake_run(runs_dir, strategy, seed, 0.9, 0)
            _fake_run(runs_dir, strategy, seed, 0.8 - 0.01 * seed, 3, label_noise="symmetric", label_noise_rate=0.1)
            _fake_run(runs_dir, strategy, seed, 0.6, 9, label_noise="pair", label_noise_rate=0.3)
            # clean labels, whatever the rate says: the same group as the first
            _fake_run(runs_dir, strategy, seed + 10, 0.9, 0, label_noise="none", label_noise_rate=0.4)
    runs = report.load_runs(report.find_runs([runs_dir]))
    assert sorted(runs.group.unique()) == ["mnist_5k, lenet, no noise, clean labels",
                                           "mnist_5k, lenet, no noise, labels pair 0.3",
                                           "mnist_5k, lenet, no noise, labels symmetric 0.1"]
    path = report.write_report(runs, tmp_path / "out")
    table = pd.read_csv(path.parent / "label_noise.csv").set_index(["label_noise", "strategy"])
    assert table.loc[("symmetric", "bald"), "n_corrupted_mean"] == 3
    assert table.loc[("pair", "random"), "corrupted_fraction_mean"] == pytest.approx(9 / 30)
    assert table.loc[("none", "random"), "n_seeds"] == 4
    assert table.loc[("symmetric", "random"), "final_test_acc_mean"] == pytest.approx(0.785)
    assert (path.parent / "label_noise.png").read_bytes().startswith(b"\x89PNG")
    text = path.read_text()
    assert "## Label noise" in text and "(label_noise.png)" in text and "(label_noise.csv)" in text


def test_report_without_label_noise_has_no_label_noise_section(tmp_path):
    import report
    for seed in (1, 2):
        _fake_run(tmp_path / "runs", "random", seed, 0.9, 0)
    runs = report.load_runs(report.find_runs([tmp_path / "runs"]))
    assert list(runs.group.unique()) == ["mnist_5k, lenet, no noise"]
    path = report.write_report(runs, tmp_path / "out")
    assert not (path.parent / "label_noise.csv").exists() and "Label noise" not in path.read_text()


def test_resume_of_a_folder_written_before_label_noise(cli, tmp_path):
    """acquired.csv without true_label and rounds.csv without n_corrupted (clean labels): filled in."""
    rc, _, err, [full] = cli(*E2E, output_dir=tmp_path / "full")
    assert rc == 0, err
    old = tmp_path / "old" / "run"
    old.mkdir(parents=True)
    shutil.copy(full.path / "config.json", old / "config.json")
    full.acquired.drop(columns=["true_label", "chosen_by", "flagged", "labeller"]).to_csv(
        old / "acquired.csv", index=False, na_rep="nan")  # nor the columns added since
    full.rounds.head(1).drop(columns="n_corrupted").to_csv(old / "rounds.csv", index=False)
    assert_resume_reproduces(cli, old, full)


def test_default_run_name_names_the_label_noise():
    import main
    from config import parse_config

    def name(*argv):
        return main.default_run_name(parse_config(["--dataset", "mnist_5k", *argv], main.CHOICES))

    assert name() == "mnist_5k_lenet_random_none_seed42"
    assert name("--label_noise", "pair", "--label_noise_rate", "0.3") == \
        "mnist_5k_lenet_random_none_labels-pair0.3_seed42"
