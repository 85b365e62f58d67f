"""One config reader for the library, the SDK, the CLI and the API: comments everywhere, sample names
wherever a path is, and the misspelt top-level key that used to give an uncompressed "success" named."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from squeezer import ConfigError, NNCFConfig, create_compressed_model
from squeezer.compression.config.reader import check_top_level, load_config, parse_config, top_level_problems
from squeezer.compression.config.samples import sample_config_path


def test_comments_are_allowed_and_errors_name_line_and_column():
    assert parse_config(b'{"compression": {"algorithm": "quantization"} // INT8\n}') == {
        "compression": {"algorithm": "quantization"}
    }
    with pytest.raises(ConfigError, match=r"mine.json is not JSON \(comments are allowed\): .*line 2 column 2"):
        parse_config('{"compression": 1\n}}', "mine.json")
    with pytest.raises(ConfigError, match=r"mine\.json: a compression config is a JSON object, got list"):
        parse_config("[1]", "mine.json")
    with pytest.raises(ConfigError, match="not UTF-8"):
        parse_config(b"\xff\xfe{}", "mine.json")


def test_a_sample_name_is_accepted_wherever_a_path_is(tmp_path, monkeypatch):
    expected = parse_config(sample_config_path("int8_early_exit").read_text())
    monkeypatch.chdir(tmp_path)  # an empty folder: the name is not a file here
    assert load_config("int8_early_exit") == load_config("int8_early_exit.json") == expected
    assert NNCFConfig.from_json("int8_early_exit") == expected
    (tmp_path / "int8.json").write_text('{"compression": {"algorithm": "magnitude_sparsity"}}')
    assert load_config("int8.json")["compression"]["algorithm"] == "magnitude_sparsity"  # a file wins
    with pytest.raises(ConfigError, match="neither a file nor a sample config; the samples are: const_sparsity"):
        load_config("int9.json")


def test_a_misspelt_compression_section_is_named_with_the_nearest_key():
    with pytest.raises(ConfigError) as info:
        check_top_level({"compresion": {"algorithm": "quantization"}})
    assert info.value.path == "$.compresion"
    assert "no 'compression' section; did you mean 'compression' (found 'compresion')?" in str(info.value)
    with pytest.raises(ConfigError, match=r"\$.compression: no 'compression' section"):
        check_top_level({"input_info": {"sample_size": [1, 3]}})
    with pytest.raises(ConfigError, match="unknown key 'input_infos'; did you mean 'input_info'"):
        check_top_level({"input_infos": {"sample_size": [1, 3]}, "compression": {"algorithm": "quantization"}})


def test_keys_of_training_scripts_and_post_training_configs_pass():
    nncf_sample = {"model": "resnet50", "batch_size": 256, "epochs": 30, "dataset": "imagenet", "num_classes": 1000}
    assert top_level_problems({**nncf_sample, "compression": [{"algorithm": "quantization"}]}) == []
    assert top_level_problems({"target_device": "CPU"}, need_compression=False) == []  # PTQ: no section needed
    assert top_level_problems({"target_devise": "CPU"}, need_compression=False) != []


def test_the_library_warns_and_takes_inputs_from_example_input(caplog):
    model = nn.Sequential(nn.Linear(7, 5), nn.ReLU(), nn.Linear(5, 2))
    with caplog.at_level(logging.WARNING):
        misspelt = {"compresion": {"algorithm": "quantization"}}
        create_compressed_model(model, misspelt, dump_graphs=False, example_input=torch.rand(3, 7))
    assert "did you mean 'compression' (found 'compresion')" in caplog.text
    config = {"compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 0}}}}
    with pytest.raises(ConfigError, match="pass example_input="):
        create_compressed_model(model, config, dump_graphs=False)
    ctrl, compressed = create_compressed_model(model, config, dump_graphs=False, example_input=torch.rand(3, 7))
    assert ctrl.setup.weights and compressed(torch.rand(4, 7)).shape == (4, 2)
