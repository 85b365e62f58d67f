"""The NNCF JSON format: every real sample parses; every kind of bad config names its JSON path."""

from __future__ import annotations

import json
import re

import pytest

from squeezer import ConfigError, NNCFConfig
from squeezer.compression.init_args import QuantizationRangeInitArgs, register_default_init_args
from squeezer.compression.registry import ALGORITHM_NAMES
from tests.conftest import SAMPLE_CONFIGS

SAMPLES = sorted(SAMPLE_CONFIGS.glob("*.json"))


def test_samples_cover_every_algorithm_and_loop():
    """The shipped samples are the user's starting points: each algorithm and loop has one."""
    algorithms, modes, precision = set(), set(), set()
    for path in SAMPLES:
        config = NNCFConfig.from_json(path)
        algorithms |= {a.algorithm for a in config.model.compression}
        if "accuracy_aware_training" in config:
            modes.add(config["accuracy_aware_training"]["mode"])
        for algo in config.model.compression:
            if algo.algorithm == "quantization" and algo.initializer.precision is not None:
                precision.add(algo.initializer.precision.type or "manual")
    assert algorithms == set(ALGORITHM_NAMES)  # every algorithm the parser knows
    assert modes == {"early_exit", "adaptive_compression_level"}
    assert precision == {"manual", "hawq", "autoq"}


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_sample_config_parses(path):
    config = NNCFConfig.from_json(path)
    raw = json.loads(
        "\n".join(
            line.split("//")[0] if "//" in line and "http" not in line else line
            for line in path.read_text().splitlines()
        )
    )
    # the dict view is the user's JSON; the typed view has one entry per algorithm
    assert dict(config) == raw
    algos = raw["compression"] if isinstance(raw["compression"], list) else [raw["compression"]]
    assert [a.algorithm for a in config.model.compression] == [a["algorithm"] for a in algos]


def test_comments_and_trailing_commas(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(
        '{"input_info": {"sample_size": [1, 3, 8, 8],}, /* block */\n'
        '"compression": [{"algorithm": "quantization"},], // line\n}'
    )
    config = NNCFConfig.from_json(path)
    assert config.model.compression[0].algorithm == "quantization"
    assert config.model.input_info[0].sample_size == [1, 3, 8, 8]


def test_typed_view_fills_defaults():
    cfg = NNCFConfig.from_dict({"compression": {"algorithm": "quantization"}}).model
    q = cfg.compression[0]
    assert (q.quantize_inputs, q.quantize_outputs, q.overflow_fix) == (True, False, "enable")
    assert cfg.target_device == "ANY" and not q.is_staged
    staged = NNCFConfig.from_dict({"compression": {"algorithm": "quantization", "params": {"base_lr": 1e-3}}})
    assert staged.model.compression[0].is_staged
    assert (
        not NNCFConfig.from_dict({"compression": {"algorithm": "quantization", "params": {}}})
        .model.compression[0]
        .is_staged
    )


def test_unknown_top_level_keys_are_kept():
    config = NNCFConfig.from_dict({"model": "resnet18", "batch_size": 8, "compression": []})
    assert config["model"] == "resnet18"
    assert config.model.compression == []


def test_from_dict_copies_the_input():
    data = {"compression": {"algorithm": "quantization"}}
    config = NNCFConfig.from_dict(data)
    config["compression"]["algorithm"] = "changed"
    assert data["compression"]["algorithm"] == "quantization"


def _q(**kw):
    return {"compression": {"algorithm": "quantization", **kw}}


BAD_CONFIGS = [
    (
        "unknown algorithm",
        {"compression": {"algorithm": "foo"}},
        r"\$\.compression\.algorithm",
        r"unknown algorithm 'foo'.*quantization",
    ),
    (
        "unknown key in section",
        _q(mode="symmetric"),
        r"\$\.compression\.mode",
        r"unknown key 'mode'; allowed keys: .*weights",
    ),
    (
        "bits above 8",
        {"compression": [{"algorithm": "quantization", "weights": {"bits": 9}}]},
        r"\$\.compression\[0\]\.weights\.bits",
        r"less than or equal to 8 \(got 9\)",
    ),
    ("bits below 2", _q(activations={"bits": 1}), r"\$\.compression\.activations\.bits", r"greater than or equal to 2"),
    ("fractional bits", _q(weights={"bits": 4.5}), r"\$\.compression\.weights\.bits", r"valid integer"),
    (
        "wrong type (string for number)",
        _q(initializer={"range": {"num_init_samples": "10"}}),
        r"\$\.compression\.initializer\.range\.num_init_samples",
        r"valid integer \(got \"10\"\)",
    ),
    (
        "wrong type (int for bool)",
        _q(weights={"per_channel": 1}),
        r"\$\.compression\.weights\.per_channel",
        r"valid boolean",
    ),
    (
        "bad mode value",
        _q(weights={"mode": "symetric"}),
        r"\$\.compression\.weights\.mode",
        r"'symmetric' or 'asymmetric'",
    ),
    (
        "bad {re} regex",
        _q(ignored_scopes=["{re}conv["]),
        r"\$\.compression\.ignored_scopes",
        r"invalid \{re\} regular expression '\{re\}conv\['",
    ),
    (
        "bad top-level regex",
        {"ignored_scopes": "{re}(", "compression": []},
        r"\$\.ignored_scopes",
        r"regular expression",
    ),
    (
        "unknown range type",
        _q(initializer={"range": {"type": "threshold"}}),
        r"\$\.compression\.initializer\.range\.type",
        r"mixed_min_max",
    ),
    (
        "negative init samples",
        _q(initializer={"range": {"num_init_samples": -1}}),
        r"\$\.compression\.initializer\.range\.num_init_samples",
        r"greater than or equal to 0",
    ),
    (
        "input_info extra key",
        {"input_info": {"shape": [1, 3]}},
        r"\$\.input_info\.shape",
        r"unknown key 'shape'.*sample_size",
    ),
    (
        "input_info non-number",
        {"input_info": {"sample_size": [1, "a"]}},
        r"\$\.input_info\.sample_size\[1\]",
        r"valid integer",
    ),
    (
        "unknown filler",
        {"input_info": {"sample_size": [1, 3], "filler": "noise"}},
        r"\$\.input_info\.filler",
        r"'ones', 'zeros' or 'random'",
    ),
    ("bad target device", {"target_device": "TPU"}, r"\$\.target_device", r"'ANY'"),
    ("overflow_fix value", _q(overflow_fix="yes"), r"\$\.compression\.overflow_fix", r"'enable'"),
    (
        "weights unified_scale_ops",
        _q(weights={"unified_scale_ops": [["a"]]}),
        r"\$\.compression\.weights\.unified_scale_ops",
        r"unknown key",
    ),
    (
        "kd without type",
        {"compression": {"algorithm": "knowledge_distillation"}},
        r"\$\.compression\.type",
        r"required key is missing",
    ),
    (
        "kd mse with temperature",
        {"compression": {"algorithm": "knowledge_distillation", "type": "mse", "temperature": 2}},
        r"\$\.compression",
        r"temperature is only allowed with type 'softmax'",
    ),
    (
        "duplicate algorithm",
        {"compression": [{"algorithm": "quantization"}, {"algorithm": "quantization"}]},
        r"\$\.compression",
        r"appears more than once",
    ),
    (
        "bitwidth_per_scope pair",
        _q(initializer={"precision": {"bitwidth_per_scope": [["b", 4]]}}),
        r"\$\.compression\.initializer\.precision\.bitwidth_per_scope",
        r"\[bits \(2-8\), scope string\]",
    ),
    (
        "accuracy-aware without degradation",
        {"accuracy_aware_training": {"mode": "early_exit", "params": {"maximal_total_epochs": 3}}},
        r"\$\.accuracy_aware_training\.params",
        r"exactly one of maximal_relative",
    ),
    (
        "accuracy-aware unknown mode",
        {"accuracy_aware_training": {"mode": "foo", "params": {}}},
        r"\$\.accuracy_aware_training\.mode",
        r"unknown mode 'foo'",
    ),
    (
        "adaptive without patience",
        {
            "accuracy_aware_training": {
                "mode": "adaptive_compression_level",
                "params": {"maximal_absolute_accuracy_degradation": 1, "initial_training_phase_epochs": 1},
            }
        },
        r"\$\.accuracy_aware_training\.params\.patience_epochs",
        r"required key is missing",
    ),
    (
        "pruning both targets",
        {
            "compression": {
                "algorithm": "filter_pruning",
                "params": {"pruning_target": 0.3, "pruning_flops_target": 0.3},
            }
        },
        r"\$\.compression\.params",
        r"only one of pruning_target and pruning_flops_target",
    ),
    (
        "sparsity multistep lengths",
        {
            "compression": {
                "algorithm": "magnitude_sparsity",
                "params": {"schedule": "multistep", "multistep_steps": [1, 2], "multistep_sparsity_levels": [0.1]},
            }
        },
        r"\$\.compression\.params",
        r"one more entry than multistep_steps",
    ),
    ("compression not object", {"compression": 5}, r"\$\.compression", r"valid array \(got 5\)"),
]


@pytest.mark.parametrize(("name", "data", "path", "message"), BAD_CONFIGS, ids=[b[0] for b in BAD_CONFIGS])
def test_bad_config_names_path_value_and_allowed(name, data, path, message):
    with pytest.raises(ConfigError) as info:
        NNCFConfig.from_dict(data)
    assert re.fullmatch(path, info.value.path), info.value.path
    assert re.search(message, str(info.value)), str(info.value)
    assert str(info.value).startswith(info.value.path)


def test_config_must_be_an_object(tmp_path):
    with pytest.raises(ConfigError, match="must be a JSON object"):
        NNCFConfig.from_dict([1, 2])  # type: ignore[arg-type]
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad.json is not JSON \(comments are allowed\): .*line 1 column 2"):
        NNCFConfig.from_json(bad)


def test_every_problem_is_listed():
    with pytest.raises(ConfigError) as info:
        NNCFConfig.from_dict(_q(weights={"bits": 9}, activations={"bits": 1}))
    assert len(info.value.problems) == 2


def test_extra_structs_register_once():
    config = NNCFConfig.from_dict({"compression": []})
    register_default_init_args(config, [(1, 2)])
    assert config.has_extra_struct(QuantizationRangeInitArgs)
    with pytest.raises(ConfigError, match="already registered"):
        register_default_init_args(config, [(1, 2)])


def test_init_loader_items_must_be_pairs():
    from squeezer.errors import CompressionError

    config = NNCFConfig.from_dict({"compression": []})
    with pytest.raises(CompressionError, match=r"\(inputs, target\) pairs.*InitDataLoader"):
        register_default_init_args(config, [(1, 2, 3)])


def test_dict_edits_are_seen_by_the_typed_view():
    config = NNCFConfig.from_dict({"compression": {"algorithm": "quantization"}})
    config["log_dir"] = "/tmp/x"
    config["compression"]["weights"] = {"bits": 4}
    assert config.model.log_dir == "/tmp/x"
    assert config.model.compression[0].weights.bits == 4
    config["compression"]["weights"] = {"bits": 40}
    with pytest.raises(ConfigError, match=r"\$\.compression\.weights\.bits"):
        _ = config.model
