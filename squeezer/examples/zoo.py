"""A zoo of widely used architectures we did not write (torchvision, timm, Hugging Face transformers),
random-init at the smallest inputs each accepts, for the tests and `bench/bench_zoo.py`.

The model packages are the `zoo` extra (`pip install -e ".[zoo]"`, part of `dev`). They are imported only
when a model is built, so the library never depends on them.

torchvision and CPU-only torch: the torchvision wheel on PyPI is built against CUDA torch, so beside a
CPU build of the same torch version its C++ extension (detection ops such as `nms`) cannot load, and
`import torchvision` then fails registering a fake kernel for `torchvision::nms`. Classification models
never call those ops. `import_torchvision()` detects that case, declares the two op schemas that
torchvision's import needs (calling them still fails with "no kernel"), logs what it did, and imports
torchvision. With a matching torchvision (its extension loads) it changes nothing.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

_missing_ops_library: torch.library.Library | None = None  # kept alive: dropping it removes the schemas


def import_torchvision() -> ModuleType:
    """`import torchvision`, also where its C++ ops cannot load (see the module docstring)."""
    if importlib.util.find_spec("torchvision") is None:
        raise ModuleNotFoundError("torchvision is not installed: pip install -e '.[zoo]'")
    prepare_torchvision()
    import torchvision

    return torchvision


def prepare_torchvision() -> None:
    """Make a later `import torchvision` work, by whoever imports it: transformers and timm do so
    themselves when torchvision is installed. Does nothing when torchvision is not installed."""
    global _missing_ops_library
    if importlib.util.find_spec("torchvision") is None:
        return
    if _missing_ops_library is None and not _torchvision_ops_load():
        logger.info(
            "torchvision's C++ extension does not load with this torch (%s); declaring torchvision::nms and "
            "torchvision::qnms without kernels so that the Python models import (detection ops will not run)",
            torch.__version__,
        )
        library = torch.library.Library("torchvision", "FRAGMENT")
        library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        library.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
        _missing_ops_library = library


def _torchvision_ops_load() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return False
    if hasattr(torch.ops.torchvision, "nms"):
        return True
    extension = next(Path(spec.origin).parent.glob("_C*.so"), None)
    if extension is None:
        return False
    try:
        torch.ops.load_library(str(extension))
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class ZooModel:
    """One architecture: how to build it (random init) and an input it accepts."""

    name: str
    family: str  # torchvision / timm / transformers
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]  # with batch 2
    kind: str = "image"  # image / tokens (int64 ids)
    num_outputs: int = 10
    tags: frozenset[str] = field(default_factory=frozenset)

    def example_input(self, batch: int = 2, seed: int = 0) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        shape = (batch, *self.input_shape[1:])
        if self.kind == "tokens":
            return torch.randint(0, VOCAB, shape, generator=generator)
        return torch.rand(shape, generator=generator)


VOCAB = 128


def _tv(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        return getattr(import_torchvision().models, name)(weights=None, num_classes=10, **kwargs)

    return build


def _timm(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import_torchvision()  # timm imports torchvision
        import timm

        return timm.create_model(name, pretrained=False, num_classes=10, **kwargs)

    return build


def _tiny_vit() -> nn.Module:
    tv = import_torchvision()
    return tv.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10
    )


def _tiny_swin() -> nn.Module:
    tv = import_torchvision()
    from torchvision.models.swin_transformer import SwinTransformer

    del tv
    return SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=[4, 4], num_classes=10
    )


class _Logits(nn.Module):
    """HF models take keyword inputs and return a `ModelOutput`; the zoo feeds one tensor, compares logits."""

    def __init__(self, model: nn.Module, input_name: str) -> None:
        super().__init__()
        self.model = model
        self.input_name = input_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(**{self.input_name: x}).logits


def _hf(kind: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        prepare_torchvision()  # transformers imports torchvision when it is installed
        hf: Any = importlib.import_module("transformers")  # untyped use: the configs differ per model

        small: dict[str, Any] = {"num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
        if kind == "bert":
            model = hf.BertForSequenceClassification(
                hf.BertConfig(vocab_size=VOCAB, hidden_size=32, num_labels=10, **small)
            )
        elif kind == "distilbert":
            model = hf.DistilBertForSequenceClassification(
                hf.DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=64, num_labels=10)
            )
        elif kind == "gpt2":
            model = hf.GPT2LMHeadModel(
                hf.GPT2Config(
                    vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=64, bos_token_id=0, eos_token_id=0
                )
            )
        elif kind == "vit":
            model = hf.ViTForImageClassification(
                hf.ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_labels=10, **small)
            )
        else:
            raise ValueError(kind)
        model.eval()
        return _Logits(model, "pixel_values" if kind == "vit" else "input_ids")

    return build


IMG32 = (2, 3, 32, 32)
IMG64 = (2, 3, 64, 64)

ZOO: dict[str, ZooModel] = {
    m.name: m
    for m in [
        ZooModel("resnet18", "torchvision", _tv("resnet18"), IMG32, tags=frozenset({"ci"})),
        ZooModel("resnet50", "torchvision", _tv("resnet50"), IMG32),
        ZooModel("resnext50_32x4d", "torchvision", _tv("resnext50_32x4d"), IMG32),
        ZooModel("wide_resnet50_2", "torchvision", _tv("wide_resnet50_2"), IMG32),
        ZooModel("mobilenet_v2", "torchvision", _tv("mobilenet_v2"), IMG32, tags=frozenset({"ci"})),
        ZooModel("mobilenet_v3_small", "torchvision", _tv("mobilenet_v3_small"), IMG32, tags=frozenset({"ci"})),
        ZooModel("mobilenet_v3_large", "torchvision", _tv("mobilenet_v3_large"), IMG32),
        ZooModel("efficientnet_b0", "torchvision", _tv("efficientnet_b0"), IMG32, tags=frozenset({"ci"})),
        ZooModel("efficientnet_v2_s", "torchvision", _tv("efficientnet_v2_s"), IMG32),
        ZooModel("regnet_x_400mf", "torchvision", _tv("regnet_x_400mf"), IMG32),
        ZooModel("regnet_y_400mf", "torchvision", _tv("regnet_y_400mf"), IMG32),
        ZooModel("shufflenet_v2_x0_5", "torchvision", _tv("shufflenet_v2_x0_5"), IMG32),
        ZooModel("squeezenet1_1", "torchvision", _tv("squeezenet1_1"), IMG64),
        ZooModel("densenet121", "torchvision", _tv("densenet121"), IMG32),
        ZooModel("mnasnet0_5", "torchvision", _tv("mnasnet0_5"), IMG32),
        ZooModel("googlenet", "torchvision", _tv("googlenet", aux_logits=False, init_weights=True), IMG32),
        ZooModel("convnext_tiny", "torchvision", _tv("convnext_tiny"), IMG32),
        ZooModel("vit_tiny", "torchvision", _tiny_vit, IMG32, tags=frozenset({"ci"})),
        ZooModel("swin_tiny", "torchvision", _tiny_swin, IMG32),
        ZooModel("efficientnet_lite0", "timm", _timm("efficientnet_lite0"), IMG32),
        ZooModel("mobilevit_xxs", "timm", _timm("mobilevit_xxs"), (2, 3, 64, 64)),
        ZooModel("deit_tiny", "timm", _timm("deit_tiny_patch16_224", img_size=32, patch_size=8), IMG32),
        ZooModel("levit_128s", "timm", _timm("levit_128s", img_size=64), IMG64),
        ZooModel("bert", "transformers", _hf("bert"), (2, 16), kind="tokens", tags=frozenset({"ci"})),
        ZooModel("distilbert", "transformers", _hf("distilbert"), (2, 16), kind="tokens"),
        ZooModel("gpt2", "transformers", _hf("gpt2"), (2, 16), kind="tokens", num_outputs=VOCAB),
        ZooModel("hf_vit", "transformers", _hf("vit"), IMG32),
    ]
}


# the 14 CNNs the placement and post-training benchmarks measure (bench_placement.py, bench_ptq.py)
BENCHMARK_CNNS: tuple[str, ...] = (
    "resnet18",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "efficientnet_lite0",
    "mnasnet0_5",
    "regnet_x_400mf",
    "regnet_y_400mf",
    "shufflenet_v2_x0_5",
    "squeezenet1_1",
    "densenet121",
    "googlenet",
    "convnext_tiny",
)


def build(name: str, seed: int = 0) -> nn.Module:
    """The zoo model `name`, random-init with `seed`, in eval mode."""
    torch.manual_seed(seed)
    model = ZOO[name].build()
    return model.eval()
