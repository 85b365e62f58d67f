"""The algorithm registry is the one home of each algorithm's metadata: everything else reads it."""

from __future__ import annotations

from typing import get_args

from squeezer.compression import registry
from squeezer.compression.config.models import AlgorithmConfig, CompressionConfigModel


def test_the_registry_knows_exactly_the_algorithms_the_parser_knows():
    union, *_ = get_args(AlgorithmConfig)
    members = get_args(union)
    assert set(registry.BY_CONFIG) == set(members)
    tags = {get_args(m.model_fields["algorithm"].annotation)[0] for m in members}
    assert set(registry.ALGORITHM_NAMES) == tags


def test_every_row_registers_its_builder_and_names_its_controller():
    registry.load_algorithms()
    for name, row in registry.ALGORITHMS.items():
        builder = row.load()
        assert builder.__module__ == row.module, name
        assert registry.algorithm(row.config) is registry.algorithm(name) is row


def test_controllers_take_their_names_from_the_registry():
    from squeezer.compression.distillation.kd import KnowledgeDistillationController
    from squeezer.compression.pruning.algorithm import FilterPruningController
    from squeezer.compression.quantization.algorithm import QuantizationController
    from squeezer.compression.sparsity.const import ConstSparsityController
    from squeezer.compression.sparsity.magnitude import MagnitudeSparsityController
    from squeezer.compression.sparsity.rb import RBSparsityController

    names = {
        c.name
        for c in (
            KnowledgeDistillationController,
            FilterPruningController,
            QuantizationController,
            ConstSparsityController,
            MagnitudeSparsityController,
            RBSparsityController,
        )
    }
    assert names == set(registry.ALGORITHM_NAMES)


def test_derived_sets():
    assert set(registry.ADAPTIVE_ALGORITHMS) == {"magnitude_sparsity", "rb_sparsity", "filter_pruning"}
    assert {"magnitude_sparsity", "rb_sparsity", "const_sparsity"} == registry.SPARSITY_ALGORITHMS
    order = sorted(registry.ALGORITHM_NAMES, key=registry.priority)
    assert order.index("filter_pruning") < order.index("magnitude_sparsity") < order.index("quantization")
    assert registry.priority("not_an_algorithm") == registry.UNKNOWN_PRIORITY


def test_a_config_section_resolves_to_its_row():
    cfg = CompressionConfigModel.model_validate(
        {"input_info": {"sample_size": [1, 3]}, "compression": [{"algorithm": "magnitude_sparsity"}]}
    )
    (section,) = cfg.compression
    assert registry.algorithm(type(section)).name == section.algorithm == "magnitude_sparsity"
