"""Token-id models end to end: `Client.compress(model, int64 ids, ...)` with a model that returns an HF
`ModelOutput`, through a live API and a real worker run, gives an ONNX that onnxruntime runs on int64
ids; data that cannot feed the ids are refused at submit with the field named."""

from __future__ import annotations

import onnxruntime as ort
import pytest
import torch
from torch import nn

from squeezer.client import Client, InvalidInput
from squeezer.client.packaging import export_model, tensor_outputs
from squeezer.worker.execute import execute_job
from tests.helpers import app_with_two_keys, live_server, tiny_bert

SEQ, VOCAB, CLASSES = 12, 128, 4
EPOCHS = 3  # enough for logits with margins: a near-chance model's argmax flips on rounding alone
INT8 = {"compression": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 16}}}}


class PooledTokens(nn.Module):
    """A small token classifier that answers like a transformers model: a `SequenceClassifierOutput`
    with logits and hidden states (a tuple), loss unset."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 16)
        self.mix = nn.Linear(16, 16)
        self.head = nn.Linear(16, CLASSES)

    def forward(self, input_ids: torch.Tensor) -> object:
        from transformers.modeling_outputs import SequenceClassifierOutput

        hidden = torch.relu(self.mix(self.embed(input_ids)))
        return SequenceClassifierOutput(logits=self.head(hidden.mean(1)), hidden_states=(hidden,))


def token_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(0, VOCAB, (n, SEQ), generator=generator)
    return x, x[:, 0] % CLASSES  # a label the first token decides


@pytest.fixture
def service(tmp_path):
    app, queue, alice, _ = app_with_two_keys(tmp_path, max_upload_bytes=4_000_000)
    with live_server(app) as url, Client(url, alice, backoff_s=0.01) as client:
        yield app, queue, client


def _compress_and_run(service, tmp_path, model: nn.Module) -> tuple[object, object]:
    app, queue, client = service
    torch.manual_seed(0)
    train, val = token_data(48, seed=1), token_data(24, seed=2)
    job = client.compress(model, train[0][:1], INT8, train, (val[0].numpy(), val[1].numpy()), {"epochs": EPOCHS})
    assert queue.jobs == [(job.id, 0)]
    execute_job(job.id, app.state.sessions, app.state.store, tmp_path / "w")
    done = client.jobs.get(job)
    return done, val


def _assert_onnx_runs_on_ids(client: Client, done, val, tmp_path) -> ort.InferenceSession:
    path = client.jobs.download(done, "onnx", tmp_path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (ids,) = session.get_inputs()
    assert ids.type == "tensor(int64)" and ids.shape[1:] == [SEQ]
    logits = session.run(None, {ids.name: val[0].numpy()})[0]
    assert logits.shape == (len(val[0]), CLASSES)
    onnx_accuracy = 100.0 * float((logits.argmax(1) == val[1].numpy()).mean())
    # the exported model is the loop's returned checkpoint, whose metric is the result's (the last epoch's,
    # current_metric, may be another epoch's: comparing with it failed whenever the best epoch was earlier)
    assert abs(onnx_accuracy - done.result.metric) <= 100.0 / len(val[0]) + 1e-9  # one sample at most
    return session


@pytest.mark.slow
def test_a_model_output_token_model_compresses_through_the_service(service, tmp_path):
    torch.manual_seed(0)  # the same model whatever ran before in this process
    done, val = _compress_and_run(service, tmp_path, PooledTokens())
    assert done.status == "succeeded", done.error
    session = _assert_onnx_runs_on_ids(service[2], done, val, tmp_path)
    assert [o.shape[1:] for o in session.get_outputs()] == [[CLASSES], [SEQ, 16]]  # logits, then hidden states


@pytest.mark.slow
def test_a_tiny_bert_compresses_through_the_service(service, tmp_path):
    torch.manual_seed(0)
    done, val = _compress_and_run(service, tmp_path, tiny_bert(VOCAB, CLASSES))
    assert done.status == "succeeded", done.error
    _assert_onnx_runs_on_ids(service[2], done, val, tmp_path)


@pytest.mark.parametrize(
    ("bad", "field", "fragment"),
    [
        ((torch.rand(8, SEQ), torch.zeros(8, dtype=torch.long)), "train_data", "the model takes int64 token ids"),
        ((torch.full((8, SEQ), VOCAB), torch.zeros(8, dtype=torch.long)), "val_data", "token ids must be in [0, 127]"),
    ],
)
def test_data_that_cannot_feed_the_ids_are_refused_at_submit(service, bad, field, fragment):
    _, queue, client = service
    good = token_data(8, seed=3)
    data = {"train_data": good, "val_data": good, field: bad}
    with pytest.raises(InvalidInput) as refused:
        client.compress(tiny_bert(VOCAB, CLASSES), good[0][:1], INT8, data["train_data"], data["val_data"])
    assert refused.value.status == 422 and refused.value.path == f"$.{field}"
    assert fragment in refused.value.detail
    assert queue.jobs == []


def test_model_outputs_become_plain_tensors_in_order():
    from transformers.modeling_outputs import SequenceClassifierOutput

    logits, hidden = torch.rand(2, CLASSES), torch.rand(2, SEQ, 16)
    flat = tensor_outputs(SequenceClassifierOutput(logits=logits, hidden_states=(hidden,)))  # loss unset
    assert isinstance(flat, tuple) and len(flat) == 2 and flat[0] is logits and flat[1] is hidden
    assert tensor_outputs({"logits": logits, "extra": None}) is logits
    with pytest.raises(TypeError, match="returns str"):
        tensor_outputs("logits")


def test_the_export_keeps_the_models_names_and_forward(tmp_path):
    model = PooledTokens()
    export_model(model, torch.randint(0, VOCAB, (1, SEQ)), tmp_path / "m.pt2")
    program = torch.export.load(tmp_path / "m.pt2")  # our own file: the SDK's user trusts it
    assert set(program.state_dict) == set(model.state_dict())  # stripped weights load into the user's class
    assert "forward" not in model.__dict__  # the model answers as before
    assert type(model(torch.zeros(1, SEQ, dtype=torch.long))).__name__ == "SequenceClassifierOutput"
