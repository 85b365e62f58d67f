"""Property-based fuzzing of the config parser (hypothesis): any JSON, and real NNCF configs with one
value replaced anywhere, either parse or raise ConfigError with a JSON path; never anything else."""

from __future__ import annotations

import copy

import jstyleson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from squeezer.compression.config.nncf_config import NNCFConfig
from squeezer.errors import ConfigError
from tests.conftest import SAMPLE_CONFIGS

SAMPLES = [jstyleson.loads(p.read_text()) for p in sorted(SAMPLE_CONFIGS.glob("*.json"))]
SAMPLES.append(
    {
        "input_info": {"sample_size": [1, 3, 32, 32]},
        "compression": [{"algorithm": "quantization"}, {"algorithm": "filter_pruning"}],
        "accuracy_aware_training": {"mode": "early_exit", "params": {"maximal_absolute_accuracy_degradation": 1}},
    }
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
CASES = {"any": 0, "mutated": 0}


def _parse(data):
    try:
        NNCFConfig.validate(data)
    except ConfigError as exc:
        assert exc.path.startswith("$") and str(exc)


@settings(max_examples=1000, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(json_values)
def test_any_json_parses_or_is_a_config_error(data):
    CASES["any"] += 1
    _parse(data)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


@settings(max_examples=2000, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_a_real_config_with_one_value_replaced_parses_or_is_a_config_error(data):
    CASES["mutated"] += 1
    config = copy.deepcopy(data.draw(st.sampled_from(SAMPLES)))
    path = data.draw(st.sampled_from(list(_paths(config))[1:]))
    target = config
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = data.draw(json_values)
    _parse(config)


@pytest.fixture(scope="module", autouse=True)
def _report():
    assert len(SAMPLES) > 10, "the sample configs were not found"
    yield
    print(f"\nhypothesis: {CASES['any']} arbitrary JSON values, {CASES['mutated']} mutated real configs")
