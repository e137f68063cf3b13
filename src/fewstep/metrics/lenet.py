"""A small LeNet classifier trained by fewstep on the embedded digits; its 128-d penultimate layer is the
feature space for a Fréchet distance that means something on MNIST-like data at CPU speed (as "MNIST FID")."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

SIZE = 28


class LeNet(nn.Module):
    dim = 128

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 7 * 7, self.dim), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(self.dim, num_classes)

    @staticmethod
    def prepare(images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [-1, 1] -> grey 28x28 (digits 8x8 are upsampled)."""
        x = images.float().mean(1, keepdim=True)
        return (
            x if x.shape[-2:] == (SIZE, SIZE) else F.interpolate(x, (SIZE, SIZE), mode="bilinear", align_corners=False)
        )

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(self.prepare(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def train_lenet(
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 2e-3,
    val_fraction: float = 0.1,
    seed: int = 0,
    log=print,
) -> tuple[LeNet, list[dict]]:
    """Adam on cross-entropy with a held-out split; returns the model and one record per epoch."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    order = torch.randperm(len(images), generator=g)
    num_val = max(1, int(len(images) * val_fraction))
    val, train = order[:num_val], order[num_val:]
    model = LeNet(int(labels.max()) + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    for epoch in range(epochs):
        model.train()
        losses = []
        for batch in torch.randperm(len(train), generator=g).split(batch_size):
            idx = train[batch]
            loss = F.cross_entropy(model(images[idx]), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            accuracy = (model(images[val]).argmax(1) == labels[val]).float().mean().item()
        record = {"epoch": epoch + 1, "train_loss": sum(losses) / len(losses), "val_accuracy": accuracy}
        history.append(record)
        log(f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}, val accuracy {accuracy:.4f}")
        if not math.isfinite(record["train_loss"]):
            raise FloatingPointError("LeNet training diverged (NaN loss); lower the learning rate")
    return model.eval(), history
