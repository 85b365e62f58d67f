"""The built-in candidates: NNCF configs for the compression methods a search tries by default.

Each is made for the model at hand (its input size) and wrapped in an Early Exit loop within the
search's accuracy budget and its share of the epochs, so a candidate stops as soon as it is good
enough. Pruning and sparsity start at their target level (no schedule): a search compares methods,
and a schedule longer than a candidate's epoch share would never reach its target. The adaptive
pruning candidate instead runs NNCF's Adaptive Compression Level loop, which searches the highest
pruning rate that stays within the budget.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

from squeezer.recipe import Recipe
from squeezer.search.spec import AccuracyBudget, CandidateSpec, Runtime

Section = dict[str, Any]

_INT8: Section = {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 256}}}


def _int8() -> list[Section]:
    return [copy.deepcopy(_INT8)]


def _hawq() -> list[Section]:
    section = copy.deepcopy(_INT8)
    # 64 samples and 20 Hutchinson probes: the bit order it needs, in seconds rather than NNCF's minutes
    section["initializer"]["precision"] = {
        "type": "hawq",
        "bits": [4, 8],
        "compression_ratio": 1.5,
        "num_data_points": 64,
        "iter_number": 20,
    }
    return [section]


def _sparsity(level: float) -> Callable[[], list[Section]]:
    def sections() -> list[Section]:
        schedule = {"schedule": "multistep", "multistep_steps": [], "multistep_sparsity_levels": [level]}
        return [{"algorithm": "magnitude_sparsity", "sparsity_init": level, "params": schedule}, *_int8()]

    return sections


def _pruning(level: float) -> Callable[[], list[Section]]:
    def sections() -> list[Section]:
        params = {
            "schedule": "baseline",
            "pruning_target": level,
            "pruning_steps": 0,
            "filter_importance": "L2",
            "prune_downsample_convs": True,  # NNCF's default leaves strided convs whole: most of a small CNN
        }
        return [{"algorithm": "filter_pruning", "pruning_init": level, "params": params}, *_int8()]

    return sections


def _adaptive_pruning() -> list[Section]:
    params = {
        "schedule": "exponential",
        "pruning_target": 0.5,
        "pruning_steps": 1,
        "filter_importance": "L2",
        "prune_downsample_convs": True,
    }
    return [{"algorithm": "filter_pruning", "pruning_init": 0.3, "params": params}, *_int8()]


ADAPTIVE = ("pruning_adaptive_int8", "pruning_adaptive_int8_kd")  # their loop searches the pruning rate

# name -> (what it is, the compression sections); "_kd" variants add distillation from the original model
_METHODS: dict[str, tuple[str, Callable[[], list[Section]]]] = {
    "int8": ("INT8 quantization-aware training", _int8),
    "int8_sparsity50": ("50% magnitude sparsity + INT8", _sparsity(0.5)),
    "pruning30_int8": ("30% of filters pruned (L2) + INT8", _pruning(0.3)),
    "pruning50_int8": ("50% of filters pruned (L2) + INT8", _pruning(0.5)),
    "hawq_int4_int8": ("mixed INT4/INT8 weights chosen by HAWQ (Hessian traces), INT8 activations", _hawq),
    "pruning_adaptive_int8": (
        "filter pruning + INT8 in the Adaptive Compression Level loop: the highest pruning rate within the budget",
        _adaptive_pruning,
    ),
}
# candidates without training: the job's recipe runs post-training quantization (recipe mode "ptq")
POST_TRAINING: dict[str, str] = {
    "ptq": "post-training INT8 quantization: calibration only, no training epochs",
    "ptq_accuracy_control": "post-training INT8, with layers back in FP32 until the metric is within the budget",
}
BUILTIN_CANDIDATES: dict[str, str] = {
    **POST_TRAINING,
    **{name: about for name, (about, _) in _METHODS.items()},
    **{f"{name}_kd": f"{about}, distilled from the original model" for name, (about, _) in _METHODS.items()},
}
# post-training candidates first: they take a minute, and within the budget they can make training moot
DEFAULT_CANDIDATES: tuple[str, ...] = (
    "ptq",
    "ptq_accuracy_control",
    "int8",
    "int8_sparsity50",
    "pruning30_int8",
    "pruning50_int8",
    "pruning50_int8_kd",
    "pruning_adaptive_int8",
    "hawq_int4_int8",
)


class UnknownCandidate(ValueError):
    def __init__(self, name: str, index: int) -> None:
        self.index = index
        super().__init__(f"unknown candidate {name!r}; built-in candidates are {sorted(BUILTIN_CANDIDATES)}")


def builtin_config(
    name: str,
    sample_size: Sequence[int] | None,
    budget: AccuracyBudget,
    epochs: int,
    task: str = "classification",
    runtime: Runtime = "onnxruntime",
) -> dict[str, Any]:
    """The NNCF config of built-in candidate `name` for a model taking `sample_size` inputs (None: no
    `input_info`; the service's runner takes it from the model archive), with the quantizer placement of
    the runtime the search measures on: `"target_runtime": "onnxruntime"` there (its integer kernels need
    more quantized inputs), NNCF's placement for OpenVINO, which is faster with it."""
    if name in POST_TRAINING:
        config: dict[str, Any] = {"compression": _int8()}
        if runtime == "onnxruntime":
            config["target_runtime"] = "onnxruntime"
        if sample_size is not None:
            config["input_info"] = {"sample_size": list(sample_size)}
        return config
    base = name.removesuffix("_kd")
    about_sections = _METHODS.get(base)
    if about_sections is None or (name != base and name not in BUILTIN_CANDIDATES):
        raise KeyError(name)
    compression = about_sections[1]()
    if name.endswith("_kd"):
        compression.append(
            {"algorithm": "knowledge_distillation", "type": "softmax" if task == "classification" else "mse"}
        )
    loop = adaptive_level(budget, epochs) if name in ADAPTIVE else early_exit(budget, epochs)
    config = {"compression": compression, "accuracy_aware_training": loop}
    if runtime == "onnxruntime":
        config["target_runtime"] = "onnxruntime"
    if sample_size is not None:
        config["input_info"] = {"sample_size": list(sample_size)}
    return config


def early_exit(budget: AccuracyBudget, epochs: int) -> dict[str, Any]:
    return {"mode": "early_exit", "params": {**budget.as_params(), "maximal_total_epochs": epochs}}


def adaptive_level(budget: AccuracyBudget, epochs: int) -> dict[str, Any]:
    """NNCF's Adaptive Compression Level loop fitted into `epochs`: a third of them at the initial rate,
    then the rate search with one epoch of patience per step."""
    params = {
        **budget.as_params(),
        "maximal_total_epochs": epochs,
        "initial_training_phase_epochs": max(1, epochs // 3),
        "patience_epochs": 1,
    }
    return {"mode": "adaptive_compression_level", "params": params}


def candidate_configs(
    candidates: Sequence[str | CandidateSpec] | None,
    sample_size: Sequence[int] | None,
    budget: AccuracyBudget,
    epochs: int,
    task: str = "classification",
    runtime: Runtime = "onnxruntime",
) -> dict[str, dict[str, Any]]:
    """name -> NNCF config for each candidate, in order. A user's config without an
    `accuracy_aware_training` section gets the search's early exit; one without `input_info` gets
    `sample_size` (when given). Raises UnknownCandidate (with the index) for a name that is not built in, and
    ValueError for a name used twice."""
    configs: dict[str, dict[str, Any]] = {}
    for index, candidate in enumerate(DEFAULT_CANDIDATES if candidates is None else candidates):
        if isinstance(candidate, str):
            try:
                name, config = candidate, builtin_config(candidate, sample_size, budget, epochs, task, runtime)
            except KeyError:
                raise UnknownCandidate(candidate, index) from None
        else:
            name, config = candidate.name, copy.deepcopy(candidate.config)
            if sample_size is not None:
                config.setdefault("input_info", {"sample_size": list(sample_size)})
            config.setdefault("accuracy_aware_training", early_exit(budget, epochs))
        if name in configs:
            raise ValueError(f"candidate {name!r} is listed twice (index {index}); names must be unique")
        configs[name] = config
    return configs


def is_post_training(name: str) -> bool:
    return name in POST_TRAINING


def training_candidates(candidates: Sequence[str | CandidateSpec] | None) -> int:
    """How many of the candidates train (the epoch budget is shared among those only)."""
    listed = DEFAULT_CANDIDATES if candidates is None else candidates
    return sum(1 for c in listed if not (isinstance(c, str) and is_post_training(c)))


def candidate_recipe(name: str, recipe: Recipe, budget: AccuracyBudget) -> Recipe:
    """The recipe candidate `name` runs with: post-training quantization for the PTQ candidates (accuracy
    control within the search's budget); for the others, training that starts from post-training ranges."""
    if name == "ptq":
        return recipe.model_copy(update={"mode": "ptq"})
    if name == "ptq_accuracy_control":
        relative = budget.maximal_relative_accuracy_degradation
        drop = relative if relative is not None else budget.maximal_absolute_accuracy_degradation
        kind = "absolute" if relative is None else "relative"
        return recipe.model_copy(update={"mode": "ptq", "max_drop": drop, "drop_type": kind})
    return recipe.model_copy(update={"init": "ptq"})
