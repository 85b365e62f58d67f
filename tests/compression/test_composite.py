"""Several algorithms in one config: one controller, summed loss, merged statistics, least stage,
state round trip in a fresh process, and one standard export."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter

import onnx
import pytest
import torch

from squeezer import CompressionStage, NNCFConfig, create_compressed_model, register_default_init_args
from squeezer.examples.models import ResidualCNN

SPARSE_INT8 = {
    "input_info": {"sample_size": [1, 1, 32, 32]},
    "compression": [
        {
            "algorithm": "rb_sparsity",
            "sparsity_init": 0.02,
            "params": {"sparsity_target": 0.5, "sparsity_target_epoch": 2},
        },
        {"algorithm": "quantization"},
    ],
}


def test_composite_controller_combines_children(digits32):
    config = register_default_init_args(NNCFConfig.from_dict(SPARSE_INT8), digits32[0])
    ctrl, model = create_compressed_model(ResidualCNN(), config, dump_graphs=False)
    assert [c.name for c in ctrl.children] == ["rb_sparsity", "quantization"]  # config order
    # the weight is masked, then quantized (priority order, whatever the config order)
    chain = [type(p).__name__ for p in model.stem[0].parametrizations.weight]
    assert chain == ["RBMask", "FakeQuantizer"]
    rb = ctrl.children[0]
    torch.testing.assert_close(ctrl.loss(), rb.loss())
    assert ctrl.compression_stage() == CompressionStage.PARTIALLY_COMPRESSED  # rb partial + int8 full
    assert set(ctrl.statistics().to_dict()) == {"rb_sparsity", "quantization"}
    assert ctrl.compression_rate == pytest.approx(0.02)
    ctrl.compression_rate = 0.3  # only one child has a rate: it is set
    assert rb.level == 0.3
    for _ in range(3):
        ctrl.scheduler.epoch_step()
    assert rb.scheduler.current_epoch == 2 and ctrl.scheduler.current_epoch == 2


@pytest.mark.slow
def test_every_algorithm_round_trips_in_a_fresh_process(tmp_path, digits32):
    configs = {
        "magnitude": {
            "algorithm": "magnitude_sparsity",
            "sparsity_init": 0.3,
            "params": {"schedule": "multistep", "multistep_steps": [1], "multistep_sparsity_levels": [0.3, 0.6]},
        },
        "rb_int8": SPARSE_INT8["compression"],
        "const": {"algorithm": "const_sparsity"},
        "kd_int8": [{"algorithm": "knowledge_distillation", "type": "softmax"}, {"algorithm": "quantization"}],
        "pruning_int8": [
            {
                "algorithm": "filter_pruning",
                "pruning_init": 0.3,
                "params": {
                    "prune_first_conv": True,
                    "prune_downsample_convs": True,
                    "pruning_target": 0.5,
                    "pruning_steps": 3,
                },
            },
            {"algorithm": "quantization"},
        ],
    }
    x = next(iter(digits32[1]))[0][:16]
    torch.save({"x": x}, tmp_path / "x.pt")
    for name, section in configs.items():
        config_dict = {"input_info": {"sample_size": [1, 1, 32, 32]}, "compression": section}
        (tmp_path / f"{name}.json").write_text(json.dumps(config_dict))
        config = register_default_init_args(NNCFConfig.from_dict(config_dict), digits32[0])
        ctrl, model = create_compressed_model(ResidualCNN(), config, dump_graphs=False)
        for _ in range(2):
            ctrl.scheduler.epoch_step()
        model.eval()
        with torch.no_grad():
            expected = model(x)
        torch.save(
            {
                "state_dict": model.state_dict(),
                "compression_state": ctrl.get_compression_state(),
                "expected": expected,
                "stage": int(ctrl.compression_stage()),
            },
            tmp_path / f"{name}.pt",
        )
    script = textwrap.dedent(f"""
        import torch
        from squeezer import NNCFConfig, create_compressed_model, load_state
        from squeezer.examples.models import ResidualCNN
        x = torch.load({str(tmp_path / "x.pt")!r})["x"]
        for name in {list(configs)!r}:
            ckpt = torch.load(f"{tmp_path}/{{name}}.pt")
            config = NNCFConfig.from_json(f"{tmp_path}/{{name}}.json")
            ctrl, model = create_compressed_model(ResidualCNN(), config, compression_state=ckpt["compression_state"],
                                                  dump_graphs=False)
            load_state(model, ckpt["state_dict"], is_resume=True)
            model.eval()
            with torch.no_grad():
                assert torch.equal(model(x), ckpt["expected"]), (name, (model(x) - ckpt["expected"]).abs().max())
            assert int(ctrl.compression_stage()) == ckpt["stage"], name
            assert ctrl.scheduler.current_epoch == 1, name
            print("OK", name)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("OK") == len(configs)


def test_sparse_int8_exports_one_standard_model(tmp_path, digits32):
    config = register_default_init_args(NNCFConfig.from_dict(SPARSE_INT8), digits32[0])
    ctrl, _ = create_compressed_model(ResidualCNN(), config, dump_graphs=False)
    for _, _, mask in ctrl.children[0].layers:
        with torch.no_grad():
            mask._mask.view(-1)[::2] = -5.0  # half of every layer pruned away
    path = ctrl.export_model(tmp_path / "m.onnx")
    graph = onnx.load(str(path)).graph
    assert Counter(n.op_type for n in graph.node)["Conv"] == 9
    int8 = [
        onnx.numpy_helper.to_array(i)
        for i in graph.initializer
        if i.data_type == onnx.TensorProto.INT8 and len(i.dims) >= 2
    ]
    assert int8 and sum(int((w == 0).sum()) for w in int8) >= 0.5 * sum(w.size for w in int8)
