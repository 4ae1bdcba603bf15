"""bench/bench_round.py and bench/bench_train_step.py run and print the JSON lines the README documents (no timing asserts)."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

BENCH = ROOT / "bench" / "bench_round.py"


def run_bench(*args):
    proc = subprocess.run([sys.executable, str(BENCH), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines()]  # stdout holds JSON lines only


FASHION_MNIST = os.path.isdir("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def bench_events():
    """One bench_round.py run for the two tests below (the machine line's 2048² matmuls and the start-up are
    paid once): the protocol's rounds where Fashion-MNIST is installed, then a 3,000-image scaling line."""
    if FASHION_MNIST:
        # --min_steps 250: 100 epochs of 100 labels are 200 steps
        return run_bench("--rounds", "1", "--scaling", "3000", "--min_steps", "250")
    return run_bench("--skip_protocol", "--scaling", "3000")


def test_scaling_table_line(bench_events):
    protocol = ["round", "round", "summary"] if FASHION_MNIST else []
    assert [e["event"] for e in bench_events] == ["machine", *protocol, "scaling"]
    machine, scaling = bench_events[0], bench_events[-1]
    assert machine["event"] == "machine" and machine["matmul_gflops"] > 0
    assert scaling["event"] == "scaling" and scaling["pool"] == 3000 and scaling["scored"] == 2900
    assert scaling["images_per_s"] > 0 and scaling["peak_rss_mb"] >= scaling["rss_before_query_mb"] > 0


@pytest.mark.skipif(not FASHION_MNIST, reason="Debian's dataset-fashion-mnist is not installed")
def test_protocol_rounds_and_summary(bench_events):
    events = bench_events
    rounds = [e for e in events if e["event"] == "round"]
    [summary] = [e for e in events if e["event"] == "summary"]
    assert [r["round"] for r in rounds] == [0, 1]
    first = rounds[0]
    assert first["pool_scored"] == 60000 - 300 - 100
    assert first["images_per_s"] == pytest.approx(first["pool_scored"] / first["query_s"], rel=1e-3)
    assert first["gflop"] > 0 and first["peak_rss_mb"] > 0
    for key in ("train_s", "query_s", "eval_s"):
        assert first[key] > 0
    assert summary["per_image_flops"]["head_k"] > 0 and summary["final_test_acc"] > 0.5
    assert summary["min_steps"] == 250 and [r["train_steps"] for r in rounds] == [250, 250]  # 2 steps a pass


def test_training_step_bench_prints_each_configuration_beside_its_yardstick():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_train_step.py"), "--models", "lenet", "cnn",
                           "--batch", "4", "--threads", "1", "--steps", "2", "--repeats", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(x["model"], x["batch"], x["threads"]) for x in lines] == [("lenet", 4, 1), ("cnn", 4, 1)]
    lenet, cnn = lines
    assert cnn["step_mflop"] > lenet["step_mflop"] > 0  # the Gal CNN's 32-channel convolutions cost more
    for x in lines:
        assert x["ms_per_step"] > 0 and x["gemm_gflops"] > 0
        assert x["yardstick_ms"] == pytest.approx(x["step_mflop"] / x["gemm_gflops"], rel=0.01)


def test_stacked_members_bench_times_both_ways_of_training_an_ensemble():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_stacked.py"), "--members", "3", "--batch", "4",
                           "--steps", "2", "--repeats", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [x["variant"] for x in lines] == ["sequential", "stacked"]
    assert all(x["members"] == 3 and x["ms_per_member_step"] > 0 for x in lines)


def test_models_mode_times_a_round_at_100_labels_for_each_model_and_stem():
    """bench_round.py --models: one model_round line per MODEL[:STEM][@STEPS], in order, with its steps (here the
    --min_steps given, passed to every run, and @STEPS for one) and the round's seconds."""
    events = run_bench("--models", "lenet", "resnet18:imagenet", "resnet18:imagenet@10", "--scaling", "--min_steps",
                       "6", "--epochs", "1", "--threads", "1", "--eval_batch_size", "100", "--pool_subset", "200",
                       "--stop_set_size", "10")
    rounds = [e for e in events if e["event"] == "model_round"]
    assert [e["event"] for e in events] == ["machine", "model_round", "model_round", "model_round"]
    assert [r["model"] for r in rounds] == ["lenet", "resnet18:imagenet", "resnet18:imagenet@10"]
    assert [r["train_steps"] for r in rounds] == [6, 6, 10]  # 2 steps a pass of 100 labels
    for r in rounds:
        assert r["n_labeled"] == 100 and 0 < r["train_s"] <= r["round_s"]
        assert r["query_s"] > 0 and r["eval_s"] > 0 and 0 <= r["test_acc"] <= 1


def test_recipe_steps_checkpoints_equal_separate_shorter_trainings():
    """bench/recipe_steps.py --checkpoints reads accuracy after fewer steps from one constant-rate training; each
    such row must equal a separate training of that length (the prefix of the run is that run), or the
    accuracy-against-steps table that sets --min_steps defaults would be measuring something else. ResNet18, so
    that the copy's BatchNorm recalibration is part of what must agree."""
    def rows(*recipes_and_flags):
        proc = subprocess.run([sys.executable, str(ROOT / "bench" / "recipe_steps.py"), "--dataset", "mnist_5k",
                               "--sizes", "20", "--seeds", "3", "--threads", "1", "--model", "resnet18",
                               "--resnet_stem", "imagenet", *recipes_and_flags], cwd=ROOT,
                              capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stderr[-2000:]
        cells = [line.strip("|").split("|") for line in proc.stdout.splitlines() if line.startswith("| 20 | 3 |")]
        return {c[2].strip(): (c[3].strip(), c[4].strip()) for c in cells}
    together = rows("--recipes", "none:constant:60", "--checkpoints", "10", "30")
    apart = rows("--recipes", "none:constant:10", "none:constant:30", "none:constant:60")
    assert set(together) == {"none:constant:10", "none:constant:30", "none:constant:60"}
    assert together == apart
    assert len({acc for acc, _ in together.values()}) > 1  # the lengths differ, so should their accuracies


def test_inference_bench_prints_each_part_of_a_round_in_both_layouts():
    """bench/bench_inference.py: eval and query per chunk size and layout, and the BatchNorm recalibration."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_inference.py"), "--models", "resnet18:imagenet",
                           "--threads", "1", "--chunks", "50", "100", "--eval_images", "100", "--pool", "120",
                           "--labels", "30", "--repeats", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    keys = {(e["what"], e["layout"], e["chunk"]) for e in lines}
    assert keys == {(w, lay, c) for w in ("eval", "query") for lay in ("nchw", "channels_last") for c in (50, 100)} | \
        {("recalibrate", "nchw", 64)}
    assert all(e["median_s"] > 0 and e["model"] == "resnet18:imagenet" and e["threads"] == 1 for e in lines)


def test_embedding_knn_counts_the_majority_of_the_nearest_by_cosine():
    """bench/embedding_knn.py's k-NN: by angle, not length (ProbCover's normalised features), majority of k."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("embedding_knn", ROOT / "bench" / "embedding_knn.py")
    knn = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(knn)
    import torch
    ref = torch.tensor([[1.0, 0.0], [9.0, 0.5], [0.0, 50.0], [0.2, 7.0], [-1.0, -1.0]])
    ref_y = torch.tensor([0, 0, 1, 1, 2])
    query, query_y = torch.tensor([[100.0, 1.0], [0.2, 1.0], [0.0, -5.0]]), torch.tensor([0, 1, 2])
    # k = 1: [0.2, 1] is nearest [1, 0] in length (class 0) but [0.2, 7] by angle (class 1, right)
    assert knn.knn_accuracy(ref, ref_y, query, query_y, k=1).tolist() == [True, True, True]
    # k = 3: [0, -5]'s nearest by angle is [-1, -1] (class 2), the next two are class 0's: the majority is wrong
    assert knn.knn_accuracy(ref, ref_y, query, query_y, k=3).tolist() == [True, True, False]
    assert knn.knn_accuracy(ref, ref_y, query, torch.tensor([0, 1, 0]), k=3, chunk=2).tolist() == [True, True, True]


def test_noise_map_tables_reads_each_number_from_reports_csvs(tmp_path):
    """bench/noise_map_tables.py prints report.py's numbers per σ, each in its column, nothing recomputed."""
    g4, g0 = "ds, lenet, gaussian 0.3, noise_std=4.0", "ds, lenet, gaussian 0.3, noise_std=0.0"
    rows = [(g, s, n, 3, acc, 0.01) for g in (g4, g0) for s, acc in (("random", 0.6), ("bald", 0.5)) for n in (40, 100)]
    pd = pytest.importorskip("pandas")
    pd.DataFrame(rows, columns=["group", "strategy", "n_labeled", "n_seeds", "test_acc_mean", "test_acc_sem"]).to_csv(
        tmp_path / "curves.csv", index=False)
    pd.DataFrame([(g4, "bald", 3, 1.0, 0.0, 0.3, 0.62, 0.01, 0.47, 0.02)], columns=[
        "group", "strategy", "n_seeds", "noisy_query_fraction_mean", "noisy_query_fraction_sem", "pool_noisy_fraction",
        "final_test_acc_clean_mean", "final_test_acc_clean_sem", "final_test_acc_noisy_mean",
        "final_test_acc_noisy_sem"]).to_csv(tmp_path / "noisy_queries.csv", index=False)
    pd.DataFrame([(g4, "random", 0.65, 3, 3, 220, 200, 240, "220 (200–240)")], columns=[
        "group", "strategy", "target", "n_seeds", "n_reached", "mean", "min", "max", "text"]).to_csv(
        tmp_path / "labels_needed.csv", index=False)
    pd.DataFrame([("ds, lenet, gaussian 0.3", "noise_std", v, "bald", "random", n, 3, "1 2 3", -0.077, 0.008, "t",
                   0.01, 0.02, True) for v in (0.0, 4.0) for n in (40, 100)],
                 columns=["setting", "field", "value", "strategy", "baseline", "n_labeled", "n_pairs", "seeds",
                          "mean_diff", "sem_diff", "test", "p", "p_holm", "significant"]).to_csv(
        tmp_path / "map.csv", index=False)
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "noise_map_tables.py"), str(tmp_path), "--at", "40",
                           "100"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    first, second = (lines.index(f"### ds, lenet, gaussian 0.3, noise_std {v}") for v in (0, 4))
    assert first < second
    sigma4 = lines[second:]
    assert "| random | 3 | 0.600 ± 0.010 | 0.600 ± 0.010 | – | 220 (200–240) | – | – | – |" in sigma4
    assert "| bald | 3 | 0.500 ± 0.010 | 0.500 ± 0.010 | 0.620 / 0.470 | – | 1.00 | -7.7 ± 0.8 (p 0.02) | " \
           "-7.7 ± 0.8 (p 0.02) |" in sigma4
