"""Filter pruning on the patterns of models this project did not write (issue 11): it prunes the
channel groups it can cut safely, leaves the rest whole and says which and why, and the stripped
model computes what the masked one does.

The tiny models reproduce torchvision's ShuffleNetV2 (channel shuffle), RegNet-X (grouped convs),
DenseNet (dense concat) and timm's ViT attention (qkv Linear reshaped into heads); GPT-2 and BERT
come from transformers with small random configs.
"""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from squeezer import NNCFConfig, create_compressed_model
from squeezer.compression.pruning import groups as groups_module

IMAGE = {"sample_size": [1, 3, 16, 16]}
TOKENS = {"sample_size": [1, 8], "type": "long"}


def build(model, input_info, level=0.5):
    config = NNCFConfig.from_dict(
        {
            "input_info": input_info,
            "compression": {
                "algorithm": "filter_pruning",
                "pruning_init": level,
                "params": {"prune_first_conv": True, "prune_downsample_convs": True, "pruning_target": level},
            },
        }
    )
    return create_compressed_model(model, config, dump_graphs=False)


def logits(out):
    return out.logits if hasattr(out, "logits") else getattr(out, "last_hidden_state", out)


def assert_strip_matches_masked(ctrl, model, x):
    """The physically pruned model runs and computes what the masked model computes."""
    stripped = ctrl.strip().eval()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(logits(stripped(x)), logits(model(x)), atol=1e-5, rtol=1e-4)
    return stripped


def skipped(ctrl):
    return ctrl.statistics().filter_pruning["skipped_layers"]


# ---------------------------------------------------------------------------------------------- ShuffleNetV2


def channel_shuffle(x, groups):
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w)
    return torch.transpose(x, 1, 2).contiguous().view(b, -1, h, w)


def depthwise(c, stride):
    return nn.Sequential(nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False), nn.BatchNorm2d(c))


def pointwise(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class ShuffleBlock(nn.Module):
    """torchvision's ShuffleNetV2 InvertedResidual: split or two branches, concat, channel shuffle."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride, half = stride, cout // 2
        self.branch1 = nn.Sequential(depthwise(cin, stride), pointwise(cin, half)) if stride > 1 else nn.Sequential()
        self.branch2 = nn.Sequential(
            pointwise(cin if stride > 1 else half, half), depthwise(half, stride), pointwise(half, half)
        )

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class TinyShuffleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = pointwise(3, 24)
        # three blocks: torch-pruning's reshape index mapping divides by zero on the third shuffle
        self.stage2 = nn.Sequential(ShuffleBlock(24, 48, 2), ShuffleBlock(48, 48, 1), ShuffleBlock(48, 48, 1))
        self.stage3 = nn.Sequential(ShuffleBlock(48, 96, 2), ShuffleBlock(96, 96, 1))
        self.conv5 = pointwise(96, 64)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.conv5(self.stage3(self.stage2(self.conv1(x)))).mean((2, 3)))


def test_channel_shuffle_prunes_what_it_can_and_names_the_rest():
    torch.manual_seed(0)
    ctrl, model = build(TinyShuffleNet(), IMAGE)
    pruned = {name for g in ctrl.groups for name in g.producer_names}
    assert "conv5.0" in pruned and "stage3.1.branch2.0.0" in pruned  # groups the shuffle does not touch
    left = skipped(ctrl)
    assert "stage3.1.branch2.2.0" in left  # its output is shuffled into the next block
    assert "channel shuffle" in left["stage3.1.branch2.2.0"]
    assert "cannot map these channels through" in left["stage2.2.branch2.2.0"]  # the ZeroDivisionError
    assert ctrl.statistics().filter_pruning["model_FLOPS_pruning_level"] > 0.2
    assert_strip_matches_masked(ctrl, model, torch.rand(2, 3, 16, 16))


# ---------------------------------------------------------------------------------------------- RegNet-X


class XBlock(nn.Module):
    """RegNet-X's bottleneck: 1x1, grouped 3x3 (group width 4), 1x1, residual add."""

    def __init__(self, c, groups):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=groups, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.c = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return torch.relu(x + self.c(self.b(self.a(x))))


class TinyRegNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block1 = XBlock(16, groups=4)
        self.block2 = XBlock(16, groups=2)
        self.head = nn.Sequential(nn.Conv2d(16, 32, 1), nn.ReLU())
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.head(self.block2(self.block1(self.stem(x)))).mean((2, 3)))


def test_grouped_convolutions_are_left_whole_instead_of_crashing_in_strip():
    torch.manual_seed(0)
    ctrl, model = build(TinyRegNet(), IMAGE)
    left = skipped(ctrl)
    assert "grouped convolution" in left["block1.a.0"] and "block1.b.0 (groups=4)" in left["block1.a.0"]
    assert "grouped convolution" in left["block2.b.0"]
    assert ["head.0"] in [g.producer_names for g in ctrl.groups]  # plain convs are still pruned
    stripped = assert_strip_matches_masked(ctrl, model, torch.rand(2, 3, 16, 16))
    assert stripped.head[0].out_channels == 16 and stripped.block1.b[0].weight.shape == (16, 4, 3, 3)


# ---------------------------------------------------------------------------------------------- DenseNet


class TinyDenseNet(nn.Module):
    """DenseNet's dense block: every layer reads the concat of all earlier features, through a BatchNorm."""

    def __init__(self, growth=16):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.BatchNorm2d(32 + i * growth),
                nn.ReLU(),
                nn.Conv2d(32 + i * growth, 32, 1),
                nn.BatchNorm2d(32),
                nn.ReLU(),
                nn.Conv2d(32, growth, 3, padding=1),
            )
            for i in range(3)
        )
        self.transition = nn.Sequential(nn.BatchNorm2d(32 + 3 * growth), nn.ReLU(), nn.Conv2d(32 + 3 * growth, 16, 1))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        features = [self.stem(x)]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return self.fc(self.transition(torch.cat(features, 1)).mean((2, 3)))


def test_dense_concat_slices_each_norm_once_across_its_groups():
    torch.manual_seed(0)
    ctrl, model = build(TinyDenseNet(), IMAGE)
    assert {"stem", "layers.0.5", "layers.2.5"} <= {name for g in ctrl.groups for name in g.producer_names}
    stripped = assert_strip_matches_masked(ctrl, model, torch.rand(2, 3, 16, 16))
    # the transition's BatchNorm follows the concat of four groups: 32 + 3 x 16 channels, half of each kept
    assert stripped.transition[0].num_features == 40 == stripped.transition[2].in_channels


# ---------------------------------------------------------------------------------------------- attention


class ViTBlock(nn.Module):
    """timm's ViT/DeiT block: a qkv Linear reshaped into (3, heads, head_dim), then an MLP."""

    def __init__(self, dim=32, heads=2):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.fc1 = nn.Linear(dim, 64)
        self.fc2 = nn.Linear(64, dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        y = ((q @ k.transpose(-2, -1)).softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
        x = x + self.proj(y)
        x = x + self.fc2(torch.relu(self.fc1(x)))
        return self.head(x.mean(1))


def test_qkv_reshaped_into_heads_is_left_whole_and_the_stripped_model_runs():
    torch.manual_seed(0)
    ctrl, model = build(ViTBlock(), {"sample_size": [1, 17, 32]})
    assert [g.producer_names for g in ctrl.groups] == [["fc1"]]
    assert "the pruned model fails" in skipped(ctrl)["qkv"]
    stripped = assert_strip_matches_masked(ctrl, model, torch.rand(2, 17, 32))
    assert stripped.fc1.out_features == 32 and stripped.qkv.out_features == 96


def test_bert_attention_heads_are_not_mixed():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    bert = BertModel(
        BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100)
    )
    ctrl, model = build(bert.eval(), TOKENS)
    # q, k and v are viewed as (heads, head_dim): cutting every other channel would merge the heads
    assert "computes something else" in skipped(ctrl)["encoder.layer.0.attention.self.query"]
    assert "LayerNorm" in skipped(ctrl)["encoder.layer.0.output.dense"]  # the residual stream
    assert sorted(name for g in ctrl.groups for name in g.producer_names) == [
        "encoder.layer.0.intermediate.dense",
        "encoder.layer.1.intermediate.dense",
    ]
    # Linear-only model: FLOPs are counted (2 x tokens x in x out per layer), and halve in the MLPs
    flops = ctrl.statistics().filter_pruning["flops"]
    per_layer = 2 * 8 * (4 * 32 * 32 + 2 * 32 * 64)
    assert flops["full"] == 2 * per_layer + 2 * 32 * 32  # + the pooler on the first token
    assert flops["current"] == flops["full"] - 2 * (2 * 8 * 2 * 32 * 32)
    assert_strip_matches_masked(ctrl, model, torch.randint(0, 100, (2, 8)))


# ---------------------------------------------------------------------------------------------- tied weights


def test_gpt2_keeps_its_vocabulary_and_tied_head_and_counts_conv1d_flops():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100)).eval()
    params = sum(p.numel() for p in gpt2.parameters())
    ctrl, model = build(gpt2, TOKENS)
    assert ctrl.groups == []
    assert "tied weights: lm_head shares its weight with transformer.wte" in skipped(ctrl)["lm_head"]
    assert "Conv1D" in skipped(ctrl)["transformer.h.0.mlp.c_fc"]
    stats = ctrl.statistics().filter_pruning
    # Conv1D (GPT-2's projections) and the LM head: 2 x tokens x in x out each
    per_layer = 2 * 8 * (32 * 96 + 32 * 32 + 32 * 128 + 128 * 32)
    assert stats["flops"]["full"] == 2 * per_layer + 2 * 8 * 32 * 100
    stripped = assert_strip_matches_masked(ctrl, model, torch.randint(0, 100, (2, 8)))
    assert logits(stripped(torch.randint(0, 100, (2, 8)))).shape == (2, 8, 100)
    assert stripped.lm_head.weight is stripped.transformer.wte.weight
    assert sum(p.numel() for p in stripped.parameters()) == params


class TiedLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(100, 32)
        self.fc1 = nn.Linear(32, 64)
        self.fc2 = nn.Linear(64, 32)
        self.lm_head = nn.Linear(32, 100, bias=False)
        self.lm_head.weight = self.embed.weight

    def forward(self, ids):
        x = self.embed(ids)
        return self.lm_head(x + self.fc2(torch.relu(self.fc1(x))))


def test_tied_embedding_and_lm_head_are_left_whole():
    torch.manual_seed(0)
    ctrl, model = build(TiedLM(), TOKENS)
    assert [g.producer_names for g in ctrl.groups] == [["fc1"]]
    left = skipped(ctrl)
    assert "tied weights: lm_head shares its weight with embed" in left["lm_head"]
    assert "embed (Embedding)" in left["fc2"]  # the hidden size is the embedding's too
    stripped = assert_strip_matches_masked(ctrl, model, torch.randint(0, 100, (2, 8)))
    assert stripped.lm_head.weight is stripped.embed.weight and stripped.lm_head.out_features == 100


# ---------------------------------------------------------------------------------------------- bounds, state


def test_analysis_past_its_time_limit_leaves_the_rest_whole(monkeypatch):
    monkeypatch.setattr(groups_module, "ANALYSIS_TIME_LIMIT_S", 0.0)
    ctrl, model = build(TinyDenseNet(), IMAGE)
    assert ctrl.groups == []
    left = skipped(ctrl)
    assert "took longer than 0 s" in left["stem"] and "layers.2.5" in left
    assert_strip_matches_masked(ctrl, model, torch.rand(2, 3, 16, 16))


class StuckInAnalysis(nn.Module):
    """Stands for Swin-T, on which torch-pruning's analysis never ends: its forward hangs only while
    torch-pruning traces it (autograd recording), not during build, FLOPs counting or inference."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        y = self.conv(x)
        if isinstance(y, torch.Tensor) and y.grad_fn is not None:
            time.sleep(600)
        return self.fc(y.mean((2, 3)))


def test_analysis_that_hangs_is_interrupted(monkeypatch):
    monkeypatch.setattr(groups_module, "ANALYSIS_TIME_LIMIT_S", 0.5)
    ctrl, model = build(StuckInAnalysis(), IMAGE)
    assert ctrl.groups == []
    assert "took longer than 0.5 s" in skipped(ctrl)["conv"]
    assert_strip_matches_masked(ctrl, model, torch.rand(2, 3, 16, 16))


def test_skipped_layers_survive_a_resume_from_the_compression_state():
    torch.manual_seed(0)
    net = TinyRegNet()
    ctrl, _ = build(net, IMAGE)
    config = NNCFConfig.from_dict(
        {
            "input_info": IMAGE,
            "compression": {
                "algorithm": "filter_pruning",
                "params": {"prune_first_conv": True, "prune_downsample_convs": True},
            },
        }
    )
    again, _ = create_compressed_model(net, config, compression_state=ctrl.get_compression_state(), dump_graphs=False)
    assert skipped(again) == skipped(ctrl) and skipped(ctrl)
    assert [g.producer_names for g in again.groups] == [g.producer_names for g in ctrl.groups]


def test_rules_are_reported_apart_from_limitations():
    ctrl, _ = build(TinyShuffleNet(), IMAGE)
    stats = ctrl.statistics().filter_pruning
    assert "computes a model output" in stats["layers_left_by_rule"]["fc"]
    assert "fc" not in stats["skipped_layers"]


# ---------------------------------------------------------------------------------------------- torchvision


def torchvision_models():
    try:
        import torchvision
    except (ImportError, RuntimeError) as exc:  # a CPU build without its C++ ops fails with RuntimeError
        pytest.skip(f"torchvision is not importable here: {exc}")
    return torchvision.models


@pytest.mark.slow
@pytest.mark.parametrize("name", ["shufflenet_v2_x0_5", "regnet_x_400mf", "densenet121", "vit", "swin_t"])
def test_torchvision_models_prune_what_they_can_and_strip_to_the_same_outputs(name, monkeypatch):
    models = torchvision_models()
    size = [1, 3, 64, 64]
    if name == "vit":
        model = models.VisionTransformer(
            image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64
        )
        size = [1, 3, 32, 32]
    else:
        model = getattr(models, name)()
    if name == "swin_t":
        monkeypatch.setattr(groups_module, "ANALYSIS_TIME_LIMIT_S", 10.0)  # its analysis runs for over 600 s
    torch.manual_seed(0)
    ctrl, compressed = build(model.eval(), {"sample_size": size})
    stats = ctrl.statistics().filter_pruning
    reasons = " ".join(stats["skipped_layers"].values())
    if name == "swin_t":
        assert ctrl.groups == [] and "took longer than 10 s" in reasons
    else:
        assert stats["model_FLOPS_pruning_level"] > 0.2
    if name == "regnet_x_400mf":
        assert "grouped convolutions" in reasons
    if name == "vit":
        assert "MultiheadAttention" in reasons
    stripped = assert_strip_matches_masked(ctrl, compressed, torch.rand(2, *size[1:]))
    assert logits(stripped(torch.rand(1, *size[1:]))).shape == (1, 1000)


class TwoConcats(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(16, 8, 1)
        self.d = nn.Conv2d(24, 4, 1)

    def forward(self, x):
        a, b = self.a(x), self.b(x)
        c = self.c(torch.cat([a, b], 1))
        return self.d(torch.cat([a, b, c], 1))


def test_the_time_limit_is_not_taken_for_a_mapping_failure(monkeypatch):
    """The timer can fire inside an index mapping, whose failures mark the node opaque and go on: the
    timeout must still end the analysis there (on Swin-T, swallowing it ran on to 22 GB)."""
    from torch_pruning.dependency import index_mapping

    calls = []
    original = index_mapping.update_concat_index_mapping

    def slow_mapping(graph, node):
        calls.append(node)
        if len(calls) == 1:
            end = time.monotonic() + 2.0
            while time.monotonic() < end:  # the 0.5 s limit fires in here
                time.sleep(0.01)
        return original(graph, node)

    monkeypatch.setattr(index_mapping, "update_concat_index_mapping", slow_mapping)
    monkeypatch.setattr(groups_module, "ANALYSIS_TIME_LIMIT_S", 0.5)
    ctrl, _ = build(TwoConcats(), IMAGE)
    assert len(calls) == 1  # nothing of the analysis ran after the limit
    assert ctrl.groups == [] and all("took longer than 0.5 s" in r for r in skipped(ctrl).values())
