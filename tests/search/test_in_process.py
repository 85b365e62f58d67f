"""`search_in_process` on real digits with a user's own training loop: the library form of a search."""

from __future__ import annotations

import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from squeezer.examples.digits import digits_loaders, train_epoch
from squeezer.examples.models import ResidualCNN
from squeezer.search import AccuracyBudget, CandidateSpec, pareto_front, search_in_process
from squeezer.search.front import LATENCY_NOISE


def accuracy(model, loader):
    model.eval()
    with torch.no_grad():
        right = sum(int((model(x).argmax(1) == y).sum()) for x, y in loader)
    return 100.0 * right / len(loader.dataset)


@pytest.fixture(scope="module")
def digits():
    torch.manual_seed(0)
    train, val = digits_loaders(image_size=8)
    model = ResidualCNN(width=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(8):
        train_epoch(model, train, optimizer)
    return model.eval(), train, val


def functions(train, val):
    def train_epoch_fn(ctrl, model, epoch, optimizer, lr_scheduler=None):
        model.train()
        for x, y in train:
            ctrl.scheduler.step()
            loss = F.cross_entropy(model(x), y) + ctrl.loss()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    def validate_fn(model, epoch):
        return accuracy(model, val)

    def configure_optimizers_fn(model):
        return torch.optim.Adam(model.parameters(), lr=1e-3), None

    return train_epoch_fn, validate_fn, configure_optimizers_fn


@pytest.mark.slow
def test_search_in_process_measures_every_candidate_and_recommends_within_budget(digits, tmp_path):
    model, train, val = digits
    fp32 = accuracy(model, val)
    result = search_in_process(
        model,
        train,
        *functions(train, val),
        torch.rand(1, 1, 8, 8),
        budget=AccuracyBudget(maximal_absolute_accuracy_degradation=2.0),
        candidates=["int8", "pruning50_int8", CandidateSpec(name="mine", config={"compression": []})],
        epochs_per_candidate=2,
        workdir=tmp_path,
    )
    assert [c.name for c in result.candidates] == ["int8", "pruning50_int8", "mine"]
    assert result.fp32_metric == pytest.approx(fp32) and result.metric_floor == pytest.approx(fp32 - 2.0)
    for c in result.candidates:
        assert c.status == "succeeded", c.error
        assert (
            c.latency_ms > 0
            and c.fp32_latency_ms > 0
            and c.size_bytes == (tmp_path / c.name / "model.onnx").stat().st_size
        )
        assert c.within_budget == (c.metric >= fp32 - 2.0)
        ort.InferenceSession(str(tmp_path / c.name / "model.onnx"))  # each export runs
    assert result.candidate("pruning50_int8").compression_rate == pytest.approx(0.5, abs=0.1)
    assert result.candidate("int8").size_bytes < 0.5 * result.candidate("mine").size_bytes  # INT8 vs FP32 weights
    assert result.front == pareto_front(result.candidates, "latency") and result.front
    # a recommendation only where one within the budget is faster than FP32 beyond the timing's noise
    faster = [c.name for c in result.candidates if c.within_budget and c.speedup > 1 + LATENCY_NOISE]
    assert (result.recommended is None) == (not faster) == result.keep_fp32
    if faster:
        assert result.recommended in faster and result.best.within_budget and result.best.on_front
    else:  # on this 8x8 CNN, INT8 is usually slower than FP32 in onnxruntime (0.85x)
        assert "keep the FP32 model" in result.recommendation_note
    assert result.epochs_spent == sum(c.epochs for c in result.candidates)


@pytest.mark.slow
def test_a_spent_wall_time_budget_starts_no_more_candidates(digits, tmp_path):
    model, train, val = digits
    result = search_in_process(
        model,
        train,
        *functions(train, val),
        torch.rand(1, 1, 8, 8),
        candidates=["pruning50_int8", "int8"],
        max_wall_time_s=1e-3,  # spent while the FP32 model is validated and exported
        workdir=tmp_path,
    )
    for candidate in result.candidates:
        assert candidate.status == "stopped" and candidate.epochs == 0 and "wall-time" in candidate.stopped_reason
        assert not (tmp_path / candidate.name).exists()  # never started
    assert result.front == [] and result.recommended is None and result.epochs_spent == 0
