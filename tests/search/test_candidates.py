"""The built-in candidates are valid NNCF configs that say what their names say."""

from __future__ import annotations

import pytest

from squeezer.compression.config.nncf_config import NNCFConfig
from squeezer.recipe import Recipe
from squeezer.search import BUILTIN_CANDIDATES, DEFAULT_CANDIDATES, AccuracyBudget, CandidateSpec, candidate_configs
from squeezer.search.candidates import UnknownCandidate, candidate_recipe, is_post_training, training_candidates

BUDGET = AccuracyBudget(maximal_absolute_accuracy_degradation=1.0)


def test_every_builtin_is_a_valid_config_with_the_search_budget():
    configs = candidate_configs(list(BUILTIN_CANDIDATES), [1, 1, 8, 8], BUDGET, epochs=4)
    assert len(DEFAULT_CANDIDATES) >= 6 and set(DEFAULT_CANDIDATES) <= set(configs)
    for name, config in configs.items():
        model = NNCFConfig.validate(config)
        if is_post_training(name):  # no training loop: calibration only (the job's recipe says so)
            assert "accuracy_aware_training" not in config and config["compression"][0]["algorithm"] == "quantization"
            continue
        aa = config["accuracy_aware_training"]
        assert aa["params"]["maximal_absolute_accuracy_degradation"] == 1.0
        assert aa["params"]["maximal_total_epochs"] == 4
        if "adaptive" in name:  # the loop that searches the pruning rate, within the same budget
            assert aa["mode"] == "adaptive_compression_level" and aa["params"]["initial_training_phase_epochs"] == 1
        else:
            assert aa["mode"] == "early_exit" and len(aa["params"]) == 2
        algorithms = [c["algorithm"] for c in (config["compression"])]
        assert "quantization" in algorithms, name
        assert ("knowledge_distillation" in algorithms) == name.endswith("_kd")
        assert ("filter_pruning" in algorithms) == name.startswith("pruning")
        assert model.input_info is not None
        assert model.target_runtime == "onnxruntime"  # the placement for the runtime the search measures on


def test_builtins_for_openvino_keep_nncf_placement():
    configs = candidate_configs(["int8", "pruning50_int8"], None, BUDGET, 2, runtime="openvino")
    assert all("target_runtime" not in config for config in configs.values())


def test_user_candidates_get_the_search_budget_unless_they_bring_their_own():
    own_loop = {"mode": "early_exit", "params": {"maximal_relative_accuracy_degradation": 5, "maximal_total_epochs": 9}}
    configs = candidate_configs(
        [
            "int8",
            CandidateSpec(name="mine", config={"compression": {"algorithm": "quantization"}}),
            CandidateSpec(name="own_loop", config={"compression": [], "accuracy_aware_training": own_loop}),
        ],
        None,
        BUDGET,
        epochs=3,
    )
    assert list(configs) == ["int8", "mine", "own_loop"]
    assert configs["mine"]["accuracy_aware_training"]["params"]["maximal_total_epochs"] == 3
    assert configs["own_loop"]["accuracy_aware_training"] == own_loop
    assert "input_info" not in configs["mine"]  # the service's runner takes it from the model


def test_unknown_and_repeated_names_are_refused():
    with pytest.raises(UnknownCandidate, match="int9") as info:
        candidate_configs(["int8", "int9"], None, BUDGET, 3)
    assert info.value.index == 1
    with pytest.raises(ValueError, match="twice"):
        candidate_configs(["int8", "int8"], None, BUDGET, 3)


def test_post_training_candidates_come_first_and_share_no_epochs():
    assert DEFAULT_CANDIDATES[:2] == ("ptq", "ptq_accuracy_control")
    assert training_candidates(None) == len(DEFAULT_CANDIDATES) - 2
    assert training_candidates(["ptq", "int8", CandidateSpec(name="ptq_mine", config={})]) == 2


def test_each_candidate_runs_with_its_recipe():
    recipe = Recipe(epochs=5, lr=0.01)
    ptq = candidate_recipe("ptq", recipe, BUDGET)
    assert ptq.mode == "ptq" and ptq.max_drop is None and ptq.lr == 0.01
    controlled = candidate_recipe("ptq_accuracy_control", recipe, BUDGET)
    assert (controlled.mode, controlled.max_drop, controlled.drop_type) == ("ptq", 1.0, "absolute")
    relative = AccuracyBudget(maximal_relative_accuracy_degradation=2.0)
    assert candidate_recipe("ptq_accuracy_control", recipe, relative).drop_type == "relative"
    trained = candidate_recipe("pruning30_int8", recipe, BUDGET)
    assert (trained.mode, trained.init, trained.epochs) == ("train", "ptq", 5)  # QAT starts from PTQ ranges
