"""report.py and reporting/: run discovery, grouping, labels needed, AULC, paired tests with Holm, mean and
standard error, aggregation across seeds, the report files, atomic writes, the CLI."""
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import report
from config import DEFAULT_CONFIG
from conftest import ROOT, fill_disk
from reporting.load import group_key, group_names, load_rounds, seeded_rounds
from reporting.stats import (TOO_FEW, aggregate_runs, aulc, build_tables, holm, labels_needed, labels_table, mean_sem,
                             paired_test, paired_tests, reach_text)
from results import ROUND_COLUMNS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_run(parent, strategy, seed, accs, status="complete", name=None, **config):
    """A run folder written by hand: n_labeled 20, 30, … with the given test accuracies."""
    folder = parent / (name or f"{strategy}_seed{seed}")
    folder.mkdir(parents=True)
    cfg = {**DEFAULT_CONFIG, "dataset": "mnist_5k", "strategy": strategy, "seed": seed, "n_init_labeled": 20,
           "n_query": 10, "n_round": 3, **config}
    (folder / "config.json").write_text(json.dumps(cfg))
    rows = [{**{c: 0.0 for c in ROUND_COLUMNS}, "round": r, "n_labeled": 20 + 10 * r, "test_acc": acc,
             "n_scored": 0 if r == cfg["n_round"] else 100, "train_s": 1.0 + r, "query_s": 0.5 * (r + 1)}
            for r, acc in enumerate(accs)]
    pd.DataFrame(rows, columns=ROUND_COLUMNS).to_csv(folder / "rounds.csv", index=False)
    (folder / "summary.json").write_text(json.dumps({"status": status}))
    return folder


def random_acc(s):
    return [0.5, 0.7, 0.85, 0.96 if s == 6 else 0.9 + 0.001 * s]


def bald_acc(s):
    return [0.5, 0.8 if s <= 3 else 0.79, 0.92, 0.97 if s == 6 else 0.95 + 0.002 * s]


def entropy_acc(s):
    return [0.5, 0.75, 0.9 if s == 3 else 0.88, 0.91 + 0.003 * s]


@pytest.fixture
def study(tmp_path):
    """No noise: random and bald with seeds 1–6, entropy with 1–3, an unfinished bald seed 7 (loose runs).
    Gaussian noise 0.1: random and bald with seeds 1 and 2 (in a sweep's cells/ folder)."""
    loose = tmp_path / "loose"
    for s in range(1, 7):
        make_run(loose, "random", s, random_acc(s))
        make_run(loose, "bald", s, bald_acc(s))
    for s in range(1, 4):
        make_run(loose, "entropy", s, entropy_acc(s))
    make_run(loose, "bald", 7, [0.5, 0.8], status="running")
    cells = tmp_path / "sweep" / "cells"
    for s in (1, 2):
        for strategy, accs in (("random", [0.4, 0.6, 0.7, 0.8]), ("bald", [0.4, 0.7, 0.8, 0.86 if s == 1 else 0.88])):
            make_run(cells, strategy, s, accs, name=f"{strategy}_{s}", noise="gaussian", noise_rate=0.1)
    return tmp_path


def loaded(root):
    return report.load_runs(report.find_runs([root]))


NONE, GAUSS = "mnist_5k, lenet, no noise", "mnist_5k, lenet, gaussian 0.1"


# ------------------------------------------------------------------------------------------ statistics

def test_labels_needed_is_the_first_size_at_or_above_the_target():
    rounds = pd.DataFrame([{"strategy": "a", "seed": seed, "n_labeled": 20 + 10 * i, "test_acc": acc}
                           for seed, accs in ((1, [0.5, 0.9, 0.8, 0.95]), (2, [0.5, 0.6, 0.7, 0.8]))
                           for i, acc in enumerate(accs)])
    got = labels_needed(rounds, 0.9)
    assert got[("a", 1)] == 30 and math.isnan(got[("a", 2)])
    assert labels_needed(rounds, 0.95)[("a", 1)] == 50
    assert labels_needed(rounds, 0.5).tolist() == [20, 20]


def test_reach_text_mean_range_k_of_n_and_not_reached():
    assert reach_text(pd.Series([30.0, 40.0, 50.0])) == "40 (30–50)"
    assert reach_text(pd.Series([30.0, math.nan, 40.0, math.nan])) == "35 (30–40), 2 of 4 seeds"
    assert reach_text(pd.Series([math.nan, math.nan])) == "not reached"


def test_labels_table_on_run_folders(study):
    runs = loaded(study)
    table = labels_table(load_rounds(runs[runs.included]), [0.8, 0.9, 0.95])
    text = table[table.group == NONE].set_index(["strategy", "target"])["text"]
    assert text["bald", 0.8] == "35 (30–40)"
    assert text["bald", 0.9] == "40 (40–40)"
    assert text["bald", 0.95] == "50 (50–50)"
    assert text["random", 0.9] == "50 (50–50)"
    assert text["random", 0.95] == "50 (50–50), 1 of 6 seeds"
    assert text["entropy", 0.9] == "47 (40–50)"
    assert text["entropy", 0.95] == "not reached"
    row = table[(table.group == NONE) & (table.strategy == "random") & (table.target == 0.95)].iloc[0]
    assert (row.n_seeds, row.n_reached, row["mean"], row["min"], row["max"]) == (6, 1, 50, 50, 50)


def test_aulc_is_the_trapezoid_area_over_the_labelled_span():
    assert aulc([20, 30, 50], [0.5, 0.7, 0.9]) == pytest.approx((10 * 0.6 + 20 * 0.8) / 30)
    assert aulc([50, 20, 30], [0.9, 0.5, 0.7]) == pytest.approx(22 / 30)  # order does not matter
    assert aulc([10, 100], [1.0, 1.0]) == 1.0
    assert math.isnan(aulc([20], [0.5]))


def test_run_table_has_final_accuracy_and_aulc(study):
    runs = loaded(study).set_index("run")
    row = runs.loc[str(study / "loose" / "random_seed1")]
    assert row.final_test_acc == pytest.approx(0.901) and row.final_n_labeled == 50 and row.n_rounds == 4
    assert row.aulc == pytest.approx(10 * (0.6 + 0.775 + 0.8755) / 30)


def test_holm_step_down_exact():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])  # capped at 1
    np.testing.assert_allclose(holm([0.04, math.nan, 0.01]), [0.04, math.nan, 0.02])  # NaN: no test
    np.testing.assert_allclose(holm([0.2]), [0.2])
    assert holm([]).size == 0


def test_paired_test_chooses_by_the_number_of_pairs_and_matches_scipy():
    x, y = [0.9, 0.8, 0.7, 0.95, 0.85, 0.75, 0.6], [0.85, 0.81, 0.6, 0.9, 0.84, 0.7, 0.5]
    test, p = paired_test(x[:2], y[:2])
    assert test == TOO_FEW and math.isnan(p)
    for n in (3, 4, 5):
        test, p = paired_test(x[:n], y[:n])
        assert test == "paired t-test" and p == stats.ttest_rel(x[:n], y[:n]).pvalue
    for n in (6, 7):
        test, p = paired_test(x[:n], y[:n])
        assert test == "Wilcoxon signed-rank" and p == stats.wilcoxon(x[:n], y[:n]).pvalue
    assert paired_test([2, 3, 4, 5, 6, 7], [1, 1, 1, 1, 1, 1])[1] == 2 / 2 ** 6  # exact: all positive


def test_paired_tests_pair_by_seed_and_holm_correct_within_the_group(study):
    runs = loaded(study)
    paired = paired_tests(runs[runs.included], "random")
    final = paired[paired.metric == "final test acc"].set_index(["group", "strategy"])
    bald, entropy = final.loc[(NONE, "bald")], final.loc[(NONE, "entropy")]
    assert (bald.n_pairs, bald.seeds, bald.test) == (6, "1 2 3 4 5 6", "Wilcoxon signed-rank")
    assert bald.mean_diff == pytest.approx((0.051 + 0.052 + 0.053 + 0.054 + 0.055 + 0.01) / 6)
    assert bald.p == 2 / 2 ** 6
    p_t = stats.ttest_rel([0.913, 0.916, 0.919], [0.901, 0.902, 0.903]).pvalue
    assert (entropy.n_pairs, entropy.test) == (3, "paired t-test")
    assert entropy.p == pytest.approx(p_t)
    assert entropy.sem_diff == pytest.approx(0.002 / math.sqrt(3))
    assert bald.p_holm == pytest.approx(max(2 * p_t, 2 / 2 ** 6)) and entropy.p_holm == pytest.approx(2 * p_t)
    assert bald.significant and entropy.significant
    gauss = final.loc[(GAUSS, "bald")]
    assert (gauss.n_pairs, gauss.test) == (2, TOO_FEW) and math.isnan(gauss.p_holm)
    assert not gauss.significant
    aulc = paired[(paired.metric == "AULC") & (paired.strategy == "bald") & (paired.group == NONE)].iloc[0]
    assert aulc.n_pairs == 6 and aulc.mean_diff > 0



def test_aggregate_mean_and_standard_error(tmp_path):
    paths = [make_run(tmp_path, "random", 1, [0.5, 0.6, 0.7]), make_run(tmp_path, "random", 2, [0.5, 0.8, 0.9]),
             make_run(tmp_path, "random", 3, [0.5, 0.7])]  # seed 3 stopped after round 1
    per_round, finals = aggregate_runs(seeded_rounds(paths))
    assert per_round["round"].tolist() == [0, 1]  # round 2 is not finished by every run
    assert per_round["test_acc_mean"].tolist() == pytest.approx([0.5, 0.7])
    assert per_round["test_acc_sem"].iloc[0] == pytest.approx(0.0)
    # values 0.6, 0.8, 0.7: sample sd 0.1, standard error 0.1 / sqrt(3)
    assert per_round["test_acc_sem"].iloc[1] == pytest.approx(0.1 / math.sqrt(3))
    assert sorted(finals["seed"]) == [1, 2, 3]
    assert dict(zip(finals["seed"], finals["test_acc"])) == pytest.approx({1: 0.7, 2: 0.9, 3: 0.7})


def test_mean_sem():
    assert mean_sem([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0 / math.sqrt(3)))
    mean, sem = mean_sem([4.0])
    assert mean == 4.0 and math.isnan(sem)

# ------------------------------------------------------------------------------------- runs and groups

def test_incomplete_runs_are_listed_but_left_out_of_the_statistics(study):
    make_run(study / "loose", "bald", 8, [0.5, 0.8, 0.9, 0.95], status="failed")
    runs = loaded(study)
    status = runs.set_index(["strategy", "seed"]).loc[[("bald", 7), ("bald", 8)]]
    assert status.status.tolist() == ["running", "failed"] and not status.included.any()
    assert status.note.tolist() == ["status running: not in the statistics", "status failed: not in the statistics"]
    tables = build_tables(runs, load_rounds(runs[runs.included]), [0.9], "random")
    curves = tables["curves"]
    assert (curves[(curves.group == NONE) & (curves.strategy == "bald")].n_seeds == 6).all()
    aulc = tables["aulc"].set_index(["group", "strategy"])
    assert aulc.loc[(NONE, "bald"), "n_seeds"] == 6
    assert len(tables["runs"]) == 21


def test_a_complete_run_that_ends_elsewhere_and_a_repeated_seed_are_left_out(tmp_path):
    for s in (1, 2):
        make_run(tmp_path, "random", s, [0.5, 0.6, 0.7, 0.8])
    make_run(tmp_path, "random", 3, [0.5, 0.6], name="random_short")
    make_run(tmp_path, "random", 1, [0.1, 0.2, 0.3, 0.4], name="random_seed1_again")
    runs = loaded(tmp_path).set_index("run")
    assert runs.included.sum() == 2
    assert runs.loc[str(tmp_path / "random_short"), "note"] == "ends elsewhere than the group's 4 rounds / 50 labels"
    assert runs.loc[str(tmp_path / "random_seed1_again"), "note"] == (
        "repeats the strategy and seed of an earlier run folder")


def test_groups_are_split_by_noise_setting_and_by_other_differing_fields(tmp_path):
    for strategy in ("random", "bald"):
        make_run(tmp_path / "a", strategy, 1, [0.5, 0.9])
        make_run(tmp_path / "b", strategy, 1, [0.5, 0.9], noise="gaussian", noise_rate=0.1)
        make_run(tmp_path / "c", strategy, 1, [0.5, 0.9], noise="gaussian", noise_rate=0.2)
        make_run(tmp_path / "d", strategy, 1, [0.5, 0.9], noise="gaussian", noise_rate=0.2, n_query=5)
        make_run(tmp_path / "e", strategy, 1, [0.5, 0.9], threads=4, output_dir="elsewhere")  # operational
        make_run(tmp_path / "f", strategy, 2, [0.5, 0.9], noise_rate=0.3)  # no noise: the rate changes nothing
    runs = loaded(tmp_path)
    assert sorted(runs.group.unique()) == ["mnist_5k, lenet, gaussian 0.1, n_query=10",
                                           "mnist_5k, lenet, gaussian 0.2, n_query=10",
                                           "mnist_5k, lenet, gaussian 0.2, n_query=5",
                                           "mnist_5k, lenet, no noise, n_query=10"]
    assert runs.groupby("group").size().tolist() == [2, 2, 2, 6]  # a, e and f share a group
    assert group_names([group_key({**DEFAULT_CONFIG, "strategy": "bald"})]) == {
        group_key(DEFAULT_CONFIG): "mnist, lenet, no noise"}  # strategy is not part of the key


def test_an_ensemble_is_a_method_compared_with_the_mc_dropout_runs_of_its_setting(tmp_path):
    for s in (1, 2, 3):
        make_run(tmp_path / "mc", "random", s, [0.5, 0.7, 0.8, 0.85])
        make_run(tmp_path / "mc", "bald", s, [0.5, 0.75, 0.85, 0.9])
        # parse_config gives an ensemble dropout 0; mc_samples is not read by it
        make_run(tmp_path / "ens", "bald", s, [0.5, 0.8, 0.9, 0.93 + 0.01 * s], uncertainty="ensemble",
                 ensemble_size=5, dropout=0.0, mc_samples=7)
    make_run(tmp_path / "ens2", "bald", 1, [0.5, 0.8, 0.9, 0.9], uncertainty="ensemble", ensemble_size=3,
             dropout=0.25)
    runs = loaded(tmp_path)
    assert runs.group.unique().tolist() == ["mnist_5k, lenet, no noise"]  # one comparison
    assert sorted(runs.strategy.unique()) == ["bald", "bald (ensemble of 3, dropout 0.25)",
                                              "bald (ensemble of 5)", "random"]
    paired = paired_tests(runs, "random")
    final = paired[(paired.strategy == "bald (ensemble of 5)") & (paired.metric == "final test acc")].iloc[0]
    assert final.n_pairs == 3 and final.mean_diff == pytest.approx(0.10)
    # MC-dropout runs at another dropout rate are their own setting, and an ensemble is then not
    # guessed into either: it stays a group of its own
    for s in (1, 2):
        make_run(tmp_path / "mc03", "random", s, [0.5, 0.6, 0.7, 0.8], dropout=0.3)
    runs = loaded(tmp_path)
    groups = runs.groupby("group").strategy.apply(lambda g: sorted(set(g))).to_dict()
    assert sorted(groups.values()) == [["bald", "random"],
                                       ["bald (ensemble of 3, dropout 0.25)", "bald (ensemble of 5)"], ["random"]]


def test_find_runs_skips_the_experiment_folder_and_searches_recursively(tmp_path):
    exp = tmp_path / "experiment_mnist_lenet_random_none_20260101-000000"
    exp.mkdir()
    (exp / "config.json").write_text(json.dumps(DEFAULT_CONFIG))
    (exp / "aggregate.csv").write_text("round\n0\n")
    inner = make_run(exp, "random", 1, [0.5, 0.6])
    deep = make_run(tmp_path / "sweep" / "cells" / "c1", "bald", 1, [0.5, 0.6], name="run")
    (tmp_path / "notes").mkdir()
    assert report.find_runs([tmp_path]) == sorted([inner, deep])
    assert report.find_runs([inner, tmp_path]) == sorted([inner, deep])  # found twice, listed once
    assert report.find_runs([inner]) == [inner]


# ---------------------------------------------------------------------------------------- report files

def test_report_writes_pngs_csvs_and_markdown_whose_links_exist(study, tmp_path):
    runs = loaded(study)
    path = report.write_report(runs, tmp_path / "out", [0.8, 0.9, 0.95], "random", sources=[str(study)])
    out = path.parent
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == ["curve_mnist_5k_lenet_gaussian_0.1.png", "curve_mnist_5k_lenet_no_noise.png"]
    for png in pngs:
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000
    text = path.read_text()
    links = [link.split(")")[0] for link in text.split("](")[1:]]
    files = [link for link in links if not link.startswith("#")]
    # the fake runs' rounds.csv have every column, stop_kappa and n_noisy too (zeros), and one group has noise
    assert set(files) == {"runs.csv", "curves.csv", "labels_needed.csv", "aulc.csv", "paired.csv", "cost.csv",
                          "noisy_queries.csv", "stopping.csv", *(p.name for p in pngs)}
    assert all((out / f).is_file() for f in files)
    assert pd.read_csv(out / "runs.csv").shape[0] == 20
    assert text.startswith("# Active-learning report\n\nRead 20 run folders under `")
    assert (": 2 groups, 3 strategies (random, bald, entropy), 7 seeds (1, 2, 3, 4, 5, 6, 7). Complete runs in the "
            "statistics: 19; left out: 1 (see [Runs](#runs)).") in text
    assert ("- bald needs fewer labels than random to reach 90% test accuracy (mean 40 vs 50); the difference in "
            "final accuracy (+0.046, 6 pairs, Wilcoxon signed-rank) is significant after Holm correction "
            "(p = 0.0312).") in text
    assert "- entropy needs fewer labels than random to reach 90% test accuracy (mean 47 vs 50); " in text
    assert ("- bald needs fewer labels than random to reach 80% test accuracy (mean 40 vs 50); too few seeds to "
            "test the difference in final accuracy (2 pairs with random; +0.070): no conclusion.") in text
    assert "Too few seeds to conclude anything" in text
    assert "| strategy | labels to 80% | labels to 90% | labels to 95% |" in text
    assert "| random | 40 (40–40) | 50 (50–50) | 50 (50–50), 1 of 6 seeds |" in text
    assert ("| random | 6 | 0.752 ± 0.002 | 0.912 ± 0.010 |\n| bald | 6 | 0.815 ± 0.001 | 0.958 ± 0.003 |\n"
            "| entropy | 3 | 0.782 ± 0.002 | 0.916 ± 0.002 |") in text  # the baseline first, as in every table
    assert "| bald | 7 | running | no | status running: not in the statistics | 2 | 30 | 0.800 |" in text
    cost = pd.read_csv(out / "cost.csv").set_index(["group", "strategy"])
    # per run: train_s 1, 2, 3, 4 → median 2.5; query_s 0.5, 1, 1.5 over the three rounds that queried → 1
    assert cost.loc[(NONE, "bald")].tolist() == [6, 2.5, 1.0, 24, 18]


def test_a_group_without_the_baseline_says_so(tmp_path):
    for s in (1, 2, 3):
        make_run(tmp_path / "runs", "bald", s, [0.5, 0.9])
    path = report.write_report(loaded(tmp_path / "runs"), tmp_path / "out", baseline="random")
    text = path.read_text()
    assert "no complete `random` runs in this group: no comparison with the baseline." in text
    assert pd.read_csv(path.parent / "paired.csv").empty


def test_a_group_of_unfinished_runs_is_listed_without_statistics(tmp_path):
    make_run(tmp_path / "runs", "random", 1, [0.5, 0.9], status="interrupted")
    make_run(tmp_path / "runs", "bald", 1, [0.5], status="running")
    path = report.write_report(loaded(tmp_path / "runs"), tmp_path / "out")
    text = path.read_text()
    assert "Runs in the statistics: none. Left out: 2 (see [Runs](#runs))." in text
    assert "No complete runs in this group: nothing to report." in text
    assert "| random | 1 | interrupted | no | status interrupted: not in the statistics | 2 | 30 | 0.900 |" in text
    assert not list(path.parent.glob("*.png")) and pd.read_csv(path.parent / "curves.csv").empty


# ------------------------------------------------------------------------------------------ command line

def test_cli_exit_code_2_on_a_missing_folder_and_on_no_runs(tmp_path, capsys):
    proc = subprocess.run([sys.executable, str(ROOT / "report.py"), str(tmp_path / "nope"), "--out",
                           str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"error: {tmp_path / 'nope'} does not exist\n"
    (tmp_path / "empty" / "experiment_x").mkdir(parents=True)
    (tmp_path / "empty" / "experiment_x" / "config.json").write_text("{}")
    assert report.main([str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no run folders") and err.count("\n") == 1
    assert report.main([str(tmp_path / "empty")]) == 2  # --out is required: one line, not argparse's usage
    assert capsys.readouterr().err == "error: the following arguments are required: --out (see report.py --help)\n"
    assert report.main([str(tmp_path / "empty"), "--out", "x", "--targets", "90"]) == 2
    assert not (tmp_path / "out").exists()


def test_a_full_disk_keeps_the_earlier_report_and_exits_2_with_one_line(study, small_disk):
    """Audit defect 10: report.py on a full disk gave a traceback (exit 1) and left a partial file. The earlier
    report covers fewer runs, so the new one needs more room than the files it replaces free."""
    out, sources = small_disk / "report", [str(study / "loose"), str(study / "sweep")]
    assert report.main([sources[1], "--out", str(out)]) == 0
    earlier = {p.name: p.read_bytes() for p in out.iterdir()}
    fill_disk(small_disk)
    proc = subprocess.run([sys.executable, str(ROOT / "report.py"), *sources, "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr == f"error: cannot write {out / 'runs.csv'}: No space left on device\n"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == earlier  # every file whole, no temporary file


def test_a_report_file_that_cannot_be_written_is_one_error_line(study, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "report.md").mkdir(parents=True)  # a folder where report.md belongs: os.replace fails (EISDIR)
    (out / "report.md" / "keep").write_text("x")
    assert report.main([str(study / "loose"), "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"error: cannot write {out / 'report.md'}: Is a directory\n"
    assert (out / "report.md" / "keep").read_text() == "x" and not list(out.glob(".*.tmp"))
    assert pd.read_csv(out / "runs.csv").shape[0] == 16  # the files before it are written, whole

def test_report_files_have_the_permissions_of_a_plain_new_file(study, tmp_path):
    (tmp_path / "plain").write_text("")  # open() gives 0666 less the umask; mkstemp alone would give 0600
    plain = (tmp_path / "plain").stat().st_mode
    path = report.write_report(loaded(study / "loose"), tmp_path / "out")
    assert {p.name: p.stat().st_mode for p in path.parent.iterdir()} == {p.name: plain for p in path.parent.iterdir()}

def test_end_to_end_on_real_runs(tmp_path):
    """Two tiny real main.py processes, then report.py on their folder: random as an --experiment with seeds
    1 and 2 (an experiment folder holding two run folders), entropy as one loose run with seed 1."""
    runs = tmp_path / "runs"
    small = ["--dataset", "mnist_5k", "--n_init_labeled", "20", "--n_query", "10", "--n_round", "1", "--epochs", "1",
             "--min_steps", "20", "--num_valid", "100", "--no-wandb", "--threads", "1", "--output_dir", str(runs)]
    commands = [["--strategy", "random", "--experiment", "--seeds", "1", "2"], ["--strategy", "entropy", "--seed", "1"]]
    procs = [subprocess.Popen([sys.executable, "main.py", *small, *command], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL) for command in commands]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "report.py", str(runs), "--out", str(out), "--targets", "0.05", "0.99"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{out / 'report.md'}\n"
    text = (out / "report.md").read_text()
    assert "Read 3 run folders under" in text and ": 1 group, 2 strategies (random, entropy), 2 seeds (1, 2)" in text
    assert "entropy needs as many labels as random to reach 5% test accuracy (mean 20 vs 20)" in text
    assert "too few seeds to test the difference in final accuracy (1 pair with random" in text
    assert "| entropy | not reached |" not in text and "| random | 20 (20–20) | not reached |" in text
    assert (out / "curve_mnist_5k_lenet_no_noise.png").read_bytes().startswith(PNG_MAGIC)
    table = pd.read_csv(out / "runs.csv")  # the experiment folder itself is not a run
    assert table.strategy.tolist() == ["entropy", "random", "random"] and table.seed.tolist() == [1, 1, 2]
    assert table.included.all() and table.final_n_labeled.tolist() == [30] * 3
    curves = pd.read_csv(out / "curves.csv")
    assert curves.n_labeled.tolist() == [20, 30, 20, 30] and curves.n_seeds.tolist() == [1, 1, 2, 2]
    cost = pd.read_csv(out / "cost.csv").set_index("strategy")
    assert cost.loc["random", "query_rounds"] == 2 and cost.loc["random", "train_rounds"] == 4


# ----------------------------------------------------------------------- noisy queries and the stopping signal

def signal_run(parent, strategy, seed, accs, n_noisy=None, kappa=None, pool_fraction=None, clean=None,
               noisy=None):
    """make_run's folder, with these n_noisy, stop_kappa, test_acc_clean and test_acc_noisy per round and the
    pool's noisy fraction in summary.json; None: an older folder, without the column (or the summary field)."""
    folder = make_run(parent, strategy, seed, accs, noise="gaussian", noise_rate=0.3)
    rounds = pd.read_csv(folder / "rounds.csv")
    for column, values in (("n_noisy", n_noisy), ("stop_kappa", kappa), ("test_acc_clean", clean),
                           ("test_acc_noisy", noisy)):
        if values is None:
            rounds = rounds.drop(columns=column)
        else:
            rounds[column] = values
    rounds.to_csv(folder / "rounds.csv", index=False)  # NaN as an empty cell, as pandas writes it
    if pool_fraction is not None:
        (folder / "summary.json").write_text(json.dumps({"status": "complete", "pool_noisy_fraction": pool_fraction}))
    return folder


def test_report_shows_noisy_queries_against_the_pool_and_the_labels_where_kappa_first_reached_099(tmp_path):
    nan, acc = math.nan, [0.5, 0.7, 0.85, 0.9]
    signal_run(tmp_path, "random", 1, acc, [3, 3, 3, 0], [nan, 0.5, 0.995, 0.999], 0.30,
               clean=[0.5, 0.7, 0.9, 0.96], noisy=[0.5, 0.7, 0.7, 0.76])
    signal_run(tmp_path, "random", 2, [0.5, 0.6, 0.8, 0.9], [2, 4, 4, 0], [nan, 0.7, 0.9, 0.98], 0.31,
               clean=[0.5, 0.6, 0.8, 0.94], noisy=[0.5, 0.6, 0.8, 0.80])
    signal_run(tmp_path, "bald", 1, acc, [9, 10, 8, 0], [nan, 0.99, 0.2, 1.0], 0.30)
    signal_run(tmp_path, "bald", 2, [0.5, 0.8, 0.9, 0.95], [10, 10, 10, 0], [nan, 0.3, 0.991, 0.5], 0.31)
    signal_run(tmp_path, "bald", 3, acc)  # a folder from before these columns: it loads, and counts elsewhere
    path = report.write_report(loaded(tmp_path), tmp_path / "out")
    text = path.read_text()

    noisy = pd.read_csv(path.parent / "noisy_queries.csv").set_index("strategy")
    # queries: 10 in each of the 3 rounds that queried; random 9/30 and 10/30, bald 27/30 and 30/30
    assert noisy.loc["random", "noisy_query_fraction_mean"] == pytest.approx((0.3 + 1 / 3) / 2)
    assert noisy.loc["bald", "noisy_query_fraction_mean"] == pytest.approx(0.95)
    assert noisy.loc["bald", "noisy_query_fraction_sem"] == pytest.approx(0.05)
    assert noisy["n_seeds"].tolist() == [2, 2] and noisy["pool_noisy_fraction"].tolist() == pytest.approx([0.305] * 2)
    # the final round's accuracy on clean / noisy test images: random 0.96 and 0.94, 0.76 and 0.80; bald's
    # folders do not have the columns (NaN, shown as –)
    assert noisy.loc["random", ["final_test_acc_clean_mean", "final_test_acc_noisy_mean"]].tolist() == \
        pytest.approx([0.95, 0.78])
    assert noisy.loc["random", "final_test_acc_noisy_sem"] == pytest.approx(0.02)
    assert noisy.loc["bald", ["final_test_acc_clean_mean", "final_test_acc_noisy_mean"]].isna().all()
    assert ("| strategy | seeds | noisy fraction of queries | pool's noisy fraction | final acc, clean test images "
            "| final acc, noisy test images |\n|---|---|---|---|---|---|\n"
            "| random | 2 | 0.317 ± 0.017 | 0.305 | 0.950 ± 0.010 | 0.780 ± 0.020 |\n"
            "| bald | 2 | 0.950 ± 0.050 | 0.305 | – | – |") in text

    stopping = pd.read_csv(path.parent / "stopping.csv").set_index("strategy")
    # random: seed 1 first at 0.995 with 40 labels, seed 2 never; bald: 0.99 at 30 labels, 0.991 at 40
    assert stopping.loc["random", ["n_seeds", "n_reached", "labels_mean"]].tolist() == [2, 1, 40]
    assert stopping.loc["bald", ["labels_mean", "labels_min", "labels_max"]].tolist() == [35, 30, 40]
    assert stopping.loc["bald", "test_acc_mean"] == pytest.approx((0.7 + 0.9) / 2)
    assert ("| strategy | seeds | labels at kappa ≥ 0.99 | test acc there |\n|---|---|---|---|\n"
            "| random | 2 | 40 (40–40), 1 of 2 seeds | 0.850 |\n| bald | 2 | 35 (30–40) | 0.800 ± 0.100 |") in text
    assert "| bald | 3 | " in text  # the older folder is in the other statistics


def test_a_report_of_older_folders_only_has_no_noisy_or_stopping_table(tmp_path):
    for seed in (1, 2):
        signal_run(tmp_path, "random", seed, [0.5, 0.7, 0.85, 0.9])
    path = report.write_report(loaded(tmp_path), tmp_path / "out")
    assert not (path.parent / "noisy_queries.csv").exists() and not (path.parent / "stopping.csv").exists()
    assert "Noisy images" not in path.read_text() and "Stopping signal" not in path.read_text()


def test_runs_that_stop_when_stable_ended_early_are_in_the_statistics_and_the_stopping_table(tmp_path):
    """--stop_when_stable 0.9, 3 planned rounds: random seed 2 stopped at round 2 (40 labels), bald seed 1 at
    round 1 (30 labels). Both are in the statistics with a note, the stopping table uses the runs' own
    threshold and counts them, and the report says what their final accuracy and AULC mean."""
    def run(strategy, seed, accs, kappas):
        folder = make_run(tmp_path, strategy, seed, accs, stop_when_stable=0.9)
        rounds = pd.read_csv(folder / "rounds.csv")
        rounds["stop_kappa"] = kappas
        rounds.to_csv(folder / "rounds.csv", index=False)
        if len(accs) < 4:
            (folder / "summary.json").write_text(json.dumps({"status": "complete", "stopped_because": "stable"}))
    nan = math.nan
    run("random", 1, [0.5, 0.6, 0.7, 0.8], [nan, 0.5, 0.6, 0.7])
    run("random", 2, [0.5, 0.65, 0.75], [nan, 0.6, 0.95])
    run("bald", 1, [0.5, 0.7], [nan, 0.92])
    run("bald", 2, [0.5, 0.7, 0.8, 0.9], [nan, 0.5, 0.85, 0.88])
    runs = loaded(tmp_path)
    assert runs["included"].all()
    notes = runs.set_index(["strategy", "seed"])["note"]
    assert notes[("random", 2)] == "stopped early by --stop_when_stable at 40 labels (round 2 of 3)"
    assert notes[("bald", 1)] == "stopped early by --stop_when_stable at 30 labels (round 1 of 3)"
    assert notes[("random", 1)] == "" and notes[("bald", 2)] == ""
    path = report.write_report(runs, tmp_path / "out")
    text = path.read_text()
    stopping = pd.read_csv(path.parent / "stopping.csv").set_index("strategy")
    assert stopping["threshold"].tolist() == [0.9, 0.9] and stopping["n_stopped"].tolist() == [1, 1]
    assert stopping.loc["random", ["n_reached", "labels_mean"]].tolist() == [1, 40]
    assert stopping.loc["bald", ["n_reached", "labels_mean", "test_acc_mean"]].tolist() == [1, 30, 0.7]
    assert "| strategy | seeds | labels at kappa ≥ 0.9 | test acc there |" in text
    assert "2 of 4 runs stopped there before their last planned round" in text
    assert "2 runs of 4 ended early by --stop_when_stable: their final test accuracy is at their stopping point" in text


def test_versus_pairs_runs_that_differ_only_in_the_named_fields(tmp_path):
    """report.py --versus model min_steps: LeNet and ResNet18 runs (which differ in model and its default
    --min_steps) of each noise setting are paired by strategy and seed, ResNet18 minus LeNet, with exact
    differences and a paired t-test; the noise settings stay apart; without --versus there is no versus.csv."""
    for s in (1, 2, 3):
        for noise, rate in (("none", 0.0), ("gaussian", 0.3)):
            for strategy, lenet_final in (("random", 0.80 + 0.01 * s), ("bald", 0.85 + 0.01 * s)):
                gap = 0.02 * s if noise == "none" else -0.05
                for model, steps, final in (("lenet", 1000, lenet_final), ("resnet18", 300, lenet_final + gap)):
                    make_run(tmp_path / "runs", strategy, s, [0.5, 0.6, 0.7, final],
                             name=f"{model}_{noise}_{strategy}_{s}", model=model, min_steps=steps, noise=noise,
                             noise_rate=rate)
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "plain")]) == 0
    assert not (tmp_path / "plain" / "versus.csv").exists()
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "rep"), "--versus", "model",
                        "min_steps", "--at", "30"]) == 0
    versus = pd.read_csv(tmp_path / "rep" / "versus.csv")
    final = versus[versus.metric == "final test acc"].set_index(["setting", "strategy"])
    assert len(final) == 4 and set(final.variant) == {"resnet18/300"} and set(final.baseline_variant) == {"lenet/1000"}
    clean = final.loc[("mnist_5k, no noise", "bald")]
    assert (clean.n_pairs, clean.seeds, clean.test) == (3, "1 2 3", "paired t-test")
    assert clean.mean_diff == pytest.approx(0.04)
    assert clean.p == pytest.approx(stats.ttest_rel([0.88, 0.91, 0.94], [0.86, 0.87, 0.88]).pvalue)
    noisy = final.loc[("mnist_5k, gaussian 0.3", "random")]
    assert noisy.mean_diff == pytest.approx(-0.05) and noisy.sem_diff == pytest.approx(0, abs=1e-12)
    # --at 30: the accuracy at 30 labels is paired too (equal there by construction); only the sizes asked for
    mid = versus[versus.metric == "test acc at 30 labels"].set_index(["setting", "strategy"])
    assert len(mid) == 4 and mid.loc[("mnist_5k, no noise", "bald"), "mean_diff"] == pytest.approx(0.0)
    assert {m for m in versus.metric if m.startswith("test acc at")} == {"test acc at 30 labels"}
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "## Variants compared (--versus)" in text and "resnet18/300 − lenet/1000" in text
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "bad"), "--versus", "seed"]) == 2


def test_map_draws_each_strategy_against_random_per_value_of_a_field(tmp_path):
    """report.py --map noise_std --at 30 40 500 (issue 25's picture): runs differing in σ are paired by seed
    with random at each size and σ; exact differences, a paired t-test and Holm across strategies and σ of
    a setting at a size; the PNG and the table; a size no run reached is blank; a bad field is refused."""
    for s in (1, 2, 3):
        for sigma in (0.0, 2.0, 4.0):
            bald_gain = 0.03 - 0.02 * sigma  # uncertainty pays without noise and stops paying with it
            for strategy, gain in (("random", 0.0), ("bald", bald_gain), ("entropy", -0.01 * s)):
                make_run(tmp_path / "runs", strategy, s, [0.5, 0.6 + gain, 0.7 + 0.01 * s + gain, 0.8],
                         name=f"{strategy}_{sigma}_{s}", noise="gaussian", noise_rate=0.3, noise_std=sigma)
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "plain")]) == 0
    assert not (tmp_path / "plain" / "map.csv").exists()
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "rep"), "--map", "noise_std",
                        "--at", "30", "40", "500"]) == 0
    table = pd.read_csv(tmp_path / "rep" / "map.csv")
    assert set(table["value"]) == {0.0, 2.0, 4.0} and set(table["n_labeled"]) == {30, 40, 500}
    at = table.set_index(["strategy", "value", "n_labeled"])
    for sigma in (0.0, 2.0, 4.0):
        assert at.loc[("bald", sigma, 30), "mean_diff"] == pytest.approx(0.03 - 0.02 * sigma)
        assert at.loc[("bald", sigma, 40), "n_pairs"] == 3 and at.loc[("bald", sigma, 500), "n_pairs"] == 0
    entropy = at.loc[("entropy", 2.0, 30)]
    assert entropy["mean_diff"] == pytest.approx(-0.02) and entropy["test"] == "paired t-test"
    assert entropy["p"] == pytest.approx(stats.ttest_rel([0.59, 0.58, 0.57], [0.6, 0.6, 0.6]).pvalue)
    family = table[table["n_labeled"] == 30]
    assert family["p_holm"].tolist() == pytest.approx(holm(family["p"].tolist()), nan_ok=True)
    pngs = list((tmp_path / "rep").glob("map_*.png"))
    assert len(pngs) == 1 and pngs[0].read_bytes().startswith(PNG_MAGIC)
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "## Strategy × noise_std (--map)" in text and f"]({pngs[0].name})" in text
    assert report.main([str(tmp_path / "runs"), "--out", str(tmp_path / "bad"), "--map", "nonsense"]) == 2


def test_power_acquisition_and_self_supervised_features_are_methods_beside_random(tmp_path):
    """A stochastic --acquisition or --embedding self_supervised names a method of the same group as the
    top-k, model-feature runs and random (so that each is paired with random), not a group of its own."""
    for s in (1, 2, 3):
        make_run(tmp_path / "runs", "random", s, [0.5, 0.6, 0.7, 0.8])
        make_run(tmp_path / "runs", "bald", s, [0.5, 0.6, 0.7, 0.81])
        make_run(tmp_path / "runs", "bald", s, [0.5, 0.6, 0.7, 0.83], name=f"power_{s}", acquisition="power")
        make_run(tmp_path / "runs", "bald", s, [0.5, 0.6, 0.7, 0.84], name=f"power2_{s}", acquisition="power",
                 acquisition_beta=2.0)
        make_run(tmp_path / "runs", "coreset", s, [0.5, 0.6, 0.7, 0.85], name=f"ssl_{s}", embedding="self_supervised",
                 ssl_epochs=10)
    runs = loaded(tmp_path / "runs")
    assert runs["group"].nunique() == 1
    assert sorted(runs["strategy"].unique()) == ["bald", "coreset (self-supervised)", "power-bald",
                                                "power-bald (β 2)", "random"]
    paired = build_tables(runs, load_rounds(runs), [0.8], "random")["paired"]
    final = paired[paired.metric == "final test acc"].set_index("strategy")["mean_diff"]
    assert final.to_dict() == pytest.approx({"bald": 0.01, "coreset (self-supervised)": 0.05, "power-bald": 0.03,
                                            "power-bald (β 2)": 0.04})
