"""scikit-learn's bundled `load_digits` (real, offline) as torch datasets, optionally upsampled to 32x32."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset


def digits_tensors(image_size: int | None = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y): x is (N, 1, S, S) in [0, 1] when `image_size` is set, else (N, 64)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0  # (N, 64)
    y = torch.tensor(data.target, dtype=torch.long)
    if image_size is not None:
        x = x.reshape(-1, 1, 8, 8)
        if image_size != 8:
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return x, y


Split = tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def digits_split(image_size: int | None = 32, seed: int = 0, val_fraction: float = 0.25) -> Split:
    """Deterministic ((x, y) train, (x, y) validation) split of the 1,797 digits."""
    x, y = digits_tensors(image_size)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_val = int(len(x) * val_fraction)
    val, train = perm[:n_val], perm[n_val:]
    return (x[train], y[train]), (x[val], y[val])


def digits_loaders(
    image_size: int | None = 32, batch_size: int = 64, seed: int = 0, val_fraction: float = 0.25
) -> tuple[DataLoader, DataLoader]:
    """Loaders over `digits_split` (training shuffled, reproducibly)."""
    (x_train, y_train), (x_val, y_val) = digits_split(image_size, seed, val_fraction)
    train_loader = DataLoader(
        TensorDataset(x_train, y_train),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    val_loader = DataLoader(TensorDataset(x_val, y_val), batch_size=256)
    return train_loader, val_loader


def train_epoch(
    model: torch.nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, ctrl: object | None = None
) -> float:
    """One epoch of cross-entropy training (plus the compression loss and scheduler calls if `ctrl`)."""
    model.train()
    total = 0.0
    for x, y in loader:
        if ctrl is not None:
            ctrl.scheduler.step()  # type: ignore[attr-defined]
        loss = F.cross_entropy(model(x), y)
        if ctrl is not None:
            loss = loss + ctrl.loss()  # type: ignore[attr-defined]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(x)
    return total / len(loader.dataset)  # type: ignore[arg-type]


@torch.no_grad()
def accuracy(model: torch.nn.Module, loader: DataLoader) -> float:
    """Top-1 accuracy in percent."""
    model.eval()
    correct = total = 0
    for x, y in loader:
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return 100.0 * correct / total


def trained_demo_cnn(epochs: int = 5) -> tuple[torch.nn.Module, float]:
    """`make demo`'s model: a ResidualCNN trained on `digits_split(32)` (Adam, cosine LR, seed 0), in eval
    mode, and its validation accuracy. The demo and the search benchmark start from the same model."""
    from squeezer.examples.models import ResidualCNN

    torch.manual_seed(0)
    train, val = digits_loaders(image_size=32)
    model = ResidualCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    for _ in range(epochs):
        train_epoch(model, train, optimizer)
        schedule.step()
    return model.eval(), accuracy(model, val)
