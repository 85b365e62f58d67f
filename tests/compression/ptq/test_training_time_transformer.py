"""`"model_type": "transformer"` in an NNCF config: the training-time API gets the post-training rules at range
init (SmoothQuant, min-max ranges; no bias correction, as post-training skips it for transformers), and a
model rebuilt from its compression state and state dict is the same model (the SmoothQuant multiplies
are recorded in the builder state)."""

from __future__ import annotations

import torch

from squeezer import NNCFConfig, create_compressed_model, load_state, register_default_init_args
from squeezer.compression.init_args import InitDataLoader
from squeezer.compression.ptq.smooth_quant import SMOOTH_ATTR
from tests.helpers import tiny_bert

SEQ = 16


class Tokens(InitDataLoader):
    def get_inputs(self, item):
        return (item[0],), {}


def _config(**top):
    config = NNCFConfig.from_dict(
        {
            "input_info": {"sample_size": [1, SEQ], "type": "long"},
            "compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 32}}},
            **top,
        }
    )
    ids = torch.randint(0, 128, (32, SEQ), generator=torch.Generator().manual_seed(0))
    register_default_init_args(config, Tokens([(ids[i : i + 8], None) for i in range(0, 32, 8)], batch_size=8))
    return config, ids


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits if hasattr(model(ids), "logits") else model(ids)[0]


def test_transformer_switch_smooths_and_survives_a_rebuild():
    model = tiny_bert()
    config, ids = _config(model_type="transformer")
    ctrl, compressed = create_compressed_model(model, config, dump_graphs=False)
    groups = ctrl.builder_state["smooth_quant"]
    assert groups and hasattr(compressed, SMOOTH_ATTR)  # the Linear groups read smoothed inputs
    assert not ctrl.ptq_report.bias_corrections  # no bias correction for transformers (it cost MiniLM cosine)
    assert ctrl.setup.activations  # INT8 activations, no hand-written scopes

    state = ctrl.get_compression_state()
    rebuilt_ctrl, rebuilt = create_compressed_model(tiny_bert(), config, compression_state=state, dump_graphs=False)
    load_state(rebuilt, compressed.state_dict(), is_resume=True)
    assert torch.equal(_logits(rebuilt.eval(), ids), _logits(compressed.eval(), ids))


def test_without_the_switch_nothing_is_smoothed():
    ctrl, compressed = create_compressed_model(tiny_bert(), _config()[0], dump_graphs=False)
    assert "smooth_quant" not in ctrl.builder_state and not hasattr(compressed, SMOOTH_ATTR)
