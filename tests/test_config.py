"""config.py: the original project's flags and defaults, parsing and validation."""
import dataclasses
from pathlib import Path

import pytest

from presets import PRESETS
from config import DEFAULT_CONFIG, Config, ConfigError, build_parser, get_logger, logger, parse_config

ORIGINAL_DEFAULTS = {
    "dataset": "mnist", "data_dir": "data", "num_valid": 1000, "batch_size": 64, "epochs": 10,
    "num_workers": 0, "seed": 42, "model": "lenet", "lr": 0.001, "strategy": "random",
    "n_init_labeled": 10000, "n_query": 1000, "n_round": 10, "noise": "none", "noise_rate": 0.0,
    "wandb": True, "experiment": False, "debug": False,
}


def test_original_flags_keep_their_defaults():
    for key, value in ORIGINAL_DEFAULTS.items():
        assert DEFAULT_CONFIG[key] == value, key


def test_added_flags_defaults():
    assert DEFAULT_CONFIG["device"] == "auto"
    assert DEFAULT_CONFIG["mc_samples"] == 20
    assert DEFAULT_CONFIG["optimizer"] == "adam"
    assert DEFAULT_CONFIG["output_dir"] == "runs"
    assert len(DEFAULT_CONFIG["seeds"]) == 3


def test_every_default_key_is_a_flag_with_the_same_name():
    parser = build_parser()
    dests = {a.dest for a in parser._actions}
    assert set(DEFAULT_CONFIG) <= dests
    assert vars(parser.parse_args([])) == {k: (list(v) if isinstance(v, tuple) else v)
                                          for k, v in DEFAULT_CONFIG.items()}


def test_wandb_on_by_default_and_no_wandb_turns_it_off():
    assert parse_config([]).wandb is True
    assert parse_config(["--no-wandb"]).wandb is False


def test_parse_types_and_seeds():
    cfg = parse_config(["--lr", "0.01", "--seeds", "1", "2", "--noise", "gaussian", "--noise_rate", "0.5",
                        "--experiment", "--debug"])
    assert cfg.lr == 0.01 and cfg.seeds == (1, 2) and cfg.noise == "gaussian" and cfg.noise_rate == 0.5
    assert cfg.experiment and cfg.debug


def test_config_is_frozen_and_round_trips_through_dict():
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_unknown_config_key_is_rejected():
    with pytest.raises(ConfigError, match="unknown config key"):
        Config.from_dict({"sead": 1})


@pytest.mark.parametrize("changes, message", [
    ({"noise_rate": -0.1}, "noise_rate"), ({"noise_rate": 1.01}, "noise_rate"),
    ({"dropout": 1.0}, "dropout"), ({"sp_fraction": 2.0}, "sp_fraction"), ({"epochs": 0}, "epochs"),
    ({"lr": 0.0}, "lr"), ({"n_query": 0}, "n_query"), ({"seeds": (1, 1)}, "repeated"),
    ({"noise": "speckle"}, "noise"), ({"optimizer": "lbfgs"}, "optimizer"),
    ({"pool_subset": 5, "n_query": 10}, "pool_subset"),
])
def test_validate_rejects(changes, message):
    with pytest.raises(ConfigError, match=message):
        Config().replace(**changes).validate()


def test_validate_checks_registry_choices():
    with pytest.raises(ConfigError, match="choose one of: a, b"):
        Config(dataset="c").validate({"dataset": ["a", "b"]})


def test_weight_decay_defaults_per_optimizer():
    assert Config(optimizer="adam").resolved_weight_decay == 0.0
    assert Config(optimizer="sgd").resolved_weight_decay == 5e-4
    assert Config(optimizer="adam", weight_decay=0.1).resolved_weight_decay == 0.1


def test_shared_logger_and_debug_level():
    import logging
    assert logger.name == "ProjectLogger"
    assert get_logger("x-test", debug=True).level == logging.DEBUG
    assert get_logger("x-test", debug=False).level == logging.INFO


def test_training_schedule_defaults_and_scaled_weight_decay():
    cfg = Config()
    assert cfg.min_steps == 1000 and cfg.epoch_samples == 0 and cfg.early_stopping == 0
    assert cfg.weight_decay_for(20) == 0.0  # adam's default, whatever the labelled-set size
    scaled = Config(weight_decay_scaled=7.0, weight_decay=0.5)
    assert scaled.weight_decay_for(20) == pytest.approx(0.35) and scaled.weight_decay_for(700) == pytest.approx(0.01)


@pytest.mark.parametrize("changes, message", [
    ({"min_steps": -1}, "min_steps"), ({"epoch_samples": -5}, "epoch_samples"),
    ({"early_stopping": -1}, "early_stopping"), ({"weight_decay_scaled": -1.0}, "weight_decay_scaled"),
    ({"preset": "gal2018"}, "preset"),
])
def test_validate_rejects_bad_schedule_and_preset(changes, message):
    with pytest.raises(ConfigError, match=message):
        Config().replace(**changes).validate()


PRESET_CHOICES = {"model": ["lenet", "resnet18", "cnn", "batchbald_cnn"]}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_values_become_the_config(name):
    cfg = parse_config(["--preset", name], PRESET_CHOICES)
    assert cfg.preset == name
    for key, value in PRESETS[name]["values"].items():
        assert getattr(cfg, key) == value, key
    untouched = set(DEFAULT_CONFIG) - set(PRESETS[name]["values"]) - {"preset"}
    assert all(getattr(cfg, key) == getattr(Config(), key) for key in untouched if key != "seeds")


def test_explicit_flags_override_a_preset_in_any_order():
    before = parse_config(["--epochs", "7", "--preset", "gal2017", "--mc_samples", "30"], PRESET_CHOICES)
    assert before.epochs == 7 and before.mc_samples == 30 and before.model == "cnn" and before.pool_subset == 2000


def test_unknown_preset_is_one_clear_error():
    with pytest.raises(ConfigError, match="preset"):
        parse_config(["--preset", "gal"])


def test_readme_preset_table_is_written_from_the_presets():
    from pathlib import Path

    from presets import markdown_table
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    hint = "regenerate the README's preset table: python -c 'import presets; print(presets.markdown_table())'"
    assert markdown_table() in readme, hint


# --- numbers: every numeric field has a rule; NaN, infinities and out-of-range values never pass ----

from config import NUMERIC_RULES  # noqa: E402

NUMERIC_FIELDS = [f.name for f in dataclasses.fields(Config)
                  if isinstance(f.default, (int, float)) and not isinstance(f.default, bool)]
FLOAT_FIELDS = [f.name for f in dataclasses.fields(Config) if isinstance(f.default, float)]
INT_FIELDS = [name for name in NUMERIC_FIELDS if name not in FLOAT_FIELDS]


def test_every_numeric_field_has_a_rule_and_its_default_passes_it():
    assert FLOAT_FIELDS and INT_FIELDS
    assert set(NUMERIC_RULES) == set(NUMERIC_FIELDS)
    for name in NUMERIC_FIELDS:
        assert NUMERIC_RULES[name].kind is type(getattr(Config(), name)), name
        NUMERIC_RULES[name].check(name, getattr(Config(), name))


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e39", "-1e39"])
@pytest.mark.parametrize("name", FLOAT_FIELDS)
def test_every_float_field_refuses_non_finite_values_from_the_command_line(name, value):
    with pytest.raises(ConfigError, match=f"--{name} must be a finite number"):
        parse_config([f"--{name}={value}"])


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("name", FLOAT_FIELDS)
def test_every_float_field_refuses_non_finite_values_from_a_config_file(name, value):
    with pytest.raises(ConfigError, match=f"--{name}"):
        Config.from_dict({name: value}).validate()


def _outside(rule):
    """Values just outside a rule's range, on each side that has a finite bound."""
    import math
    step = 1 if rule.kind is int else 1e-9
    out = []
    if rule.low != -math.inf:
        out.append(rule.low if rule.low_open else rule.low - step)
    if rule.high != math.inf:
        out.append(rule.high if rule.high_open else rule.high + step)
        out.append(rule.high * 10**6 if rule.high else 10**6)  # far above
    return out


@pytest.mark.parametrize("name", NUMERIC_FIELDS)
def test_every_numeric_field_refuses_values_outside_its_range(name):
    rule = NUMERIC_RULES[name]
    values = _outside(rule)
    assert values or name == "weight_decay", name  # only weight_decay has no bound (negative = default)
    for value in values:
        with pytest.raises(ConfigError, match=f"--{name} must be in"):
            Config().replace(**{name: value}).validate()
        if rule.kind is int or value >= 0:  # argparse reads "-0.1" as an option name: use --name=value
            with pytest.raises(ConfigError, match=f"--{name}"):
                parse_config([f"--{name}={value}"])


@pytest.mark.parametrize("name, values", [
    ("lr", [0.0, -1e-3]), ("momentum", [-1.0, 1.0, 1.5]), ("dropout", [-0.1, 1.0]),
    ("noise_rate", [-0.01, 1.01]), ("sp_fraction", [-0.5, 2.0]), ("noise_std", [-1e-6, -3.0]),
    ("weight_decay_scaled", [-1.0]), ("seed", [-1, 2**63, 10**30]), ("threads", [-1, 100000]),
    ("epochs", [0, 2**31]), ("epoch_samples", [-1, 10**12]), ("batch_size", [0, 10**40]),
])
def test_named_ranges_from_the_brief(name, values):
    for value in values:
        with pytest.raises(ConfigError, match=f"--{name}"):
            Config().replace(**{name: value}).validate()


@pytest.mark.parametrize("value", [-1.0, -1e-3, 0.0, 0.5, 1e3])
def test_weight_decay_negative_still_means_the_default(value):
    cfg = Config(weight_decay=value).validate()
    assert cfg.resolved_weight_decay == (value if value >= 0 else 0.0)


@pytest.mark.parametrize("seeds", [(1, -2), (1, 2**63), (1, 10**30)])
def test_every_seed_of_an_experiment_is_checked(seeds):
    with pytest.raises(ConfigError, match="--seeds"):
        Config(seeds=seeds).validate()


@pytest.mark.parametrize("changes", [{"seed": "42"}, {"seed": 4.0}, {"seed": True}, {"lr": "0.1"},
                                     {"epochs": 2.5}, {"momentum": None}])
def test_a_config_file_with_wrong_types_is_refused(changes):
    with pytest.raises(ConfigError, match="must be"):
        Config.from_dict(changes).validate()


def test_extreme_but_valid_numbers_pass():
    cfg = Config(seed=2**63 - 1, seeds=(0, 2**63 - 1), threads=1024, lr=1e30, noise_std=1e30,
                 weight_decay=-1e30, momentum=0.999999).validate()
    assert cfg.seed == 2**63 - 1


def test_a_new_numeric_field_without_a_rule_is_caught(monkeypatch):
    import config
    monkeypatch.delitem(config.NUMERIC_RULES, "noise_std")
    with pytest.raises(TypeError, match="noise_std"):
        Config().validate()


def test_config_json_never_holds_nan():
    import json
    cfg = parse_config(["--lr", "0.5", "--noise_std", "2"])
    json.dumps(cfg.to_dict(), allow_nan=False)


# --- one declaration per field: the parser, the rules and the README's table come from it -------------

def test_the_readme_flags_table_is_the_one_generated_from_the_declarations():
    from config import flags_table
    from registries import REGISTRY_NAMES
    from scripts.flags_table import readme_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    start, end = readme_table(readme)
    assert readme[start:end] == flags_table(REGISTRY_NAMES), "run: python -m scripts.flags_table"


def test_every_field_is_declared_with_its_help_and_its_choices_once():
    import config
    from noise import NOISE_KINDS

    for f in dataclasses.fields(Config):
        assert f.metadata["help"], f.name
        assert f.name in config.HELP
    assert NOISE_KINDS is config.NOISES and config.FIXED_CHOICES["noise"] == config.NOISES
    parser = build_parser()
    noise = next(a for a in parser._actions if a.dest == "noise")
    assert sorted(noise.choices) == sorted(config.NOISES)


@pytest.mark.parametrize("argv", [["--n_q", "20"], ["--epo", "3"], ["--no-wan"], ["--strat", "bald"]])
def test_an_abbreviated_flag_is_refused_not_guessed(argv):
    with pytest.raises(ConfigError, match="unrecognized arguments"):
        parse_config(argv)


def test_given_flags_are_those_argparse_reads():
    from config import given_flags

    assert given_flags(["--n_query", "5", "--no-wandb", "--seeds", "1", "2", "--lr=0.1"]) == \
        {"n_query", "wandb", "seeds", "lr"}
    assert given_flags([]) == set()


def test_help_prints_every_flag_and_exits_0(capsys):
    """`main.py --help` is what a new user types first: it must print, not crash on a '%' in a help text."""
    parser = build_parser()
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    for f in dataclasses.fields(Config):
        assert f"--{f.name}" in out
    assert "in the first 30% of the steps" in " ".join(out.split())  # a literal '%' shows as itself
