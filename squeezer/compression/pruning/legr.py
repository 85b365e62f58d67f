"""LeGR (learned global ranking): learn an affine transform of each group's filter importance by
evolution, so that one global ranking across groups decides which filters to remove.

Each candidate (a_g, b_g per group) is scored by pruning the model to `max_pruning` of its FLOPs
with the transformed ranking, training `train_steps` steps and validating; the model's weights and
masks are restored after every candidate. The search is regularized evolution: sample
`num_samples` candidates, mutate the best, replace the oldest.
"""

from __future__ import annotations

import collections
import copy
import json
import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from squeezer.compression.config.models import LegrParams
from squeezer.compression.init_args import LeGRInitArgs

if TYPE_CHECKING:
    from squeezer.compression.pruning.algorithm import FilterPruningController

logger = logging.getLogger(__name__)
Ranking = dict[int, tuple[float, float]]


def _mutate(parent: Ranking, rnd: random.Random, share: float, sigma: float) -> Ranking:
    child = dict(parent)
    for gid in child:
        if rnd.random() < share:
            a, b = child[gid]
            child[gid] = (a * abs(rnd.gauss(1.0, sigma * 0.1)), b + rnd.gauss(0.0, sigma * 0.1))
    return child


def learn_ranking(ctrl: FilterPruningController, args: LeGRInitArgs, params: LegrParams, max_pruning: float) -> Ranking:
    rnd = random.Random(params.random_seed)
    torch.manual_seed(params.random_seed)
    saved = copy.deepcopy(ctrl.model.state_dict())

    def fitness(ranking: Ranking) -> float:
        ctrl.ranking = ranking
        ctrl._apply(ctrl._masks_for_flops(max_pruning))
        optimizer = args.train_optimizer or torch.optim.SGD(ctrl.model.parameters(), lr=1e-3, momentum=0.9)
        args.train_fn(args.train_loader, ctrl.model, optimizer, ctrl, params.train_steps)
        score = float(args.val_fn(ctrl.model, args.val_loader))
        ctrl.model.load_state_dict(saved)
        return score

    identity: Ranking = {g.id: (1.0, 0.0) for g in ctrl.groups}
    population: collections.deque[tuple[float, Ranking]] = collections.deque()
    candidates = [identity] + [
        _mutate(identity, rnd, 1.0, params.scale_sigma) for _ in range(params.population_size - 1)
    ]
    for candidate in candidates:
        population.append((fitness(candidate), candidate))
    for generation in range(params.generations):
        sample = rnd.sample(list(population), min(params.num_samples, len(population)))
        parent = max(sample, key=lambda item: item[0])[1]
        child = _mutate(parent, rnd, params.mutate_percent, params.scale_sigma)
        population.append((fitness(child), child))
        population.popleft()
        logger.info("LeGR generation %d: best %.4f", generation, max(f for f, _ in population))
    best = max(population, key=lambda item: item[0])[1]
    ctrl.ranking = None
    return best


def save_ranking(ranking: Ranking, path: str) -> None:
    Path(path).write_text(json.dumps({str(gid): list(ab) for gid, ab in ranking.items()}, indent=2))


def load_ranking(path: str) -> Ranking:
    data = json.loads(Path(path).read_text())
    return {int(gid): (float(ab[0]), float(ab[1])) for gid, ab in data.items()}
