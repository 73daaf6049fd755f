"""MNIST-scale models: the Madry et al. CNN, the "Fast is better than free" net, an MLP."""
from __future__ import annotations

import torch.nn as nn


class MadryMNISTCNN(nn.Module):
    """Madry et al. 2018 MNIST CNN: conv5x5(32)-pool-conv5x5(64)-pool-fc1024-fc10.

    ``width`` scales the channel and hidden sizes (width=1 is the paper's net).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: float = 1.0, input_size: int = 28):
        super().__init__()
        c1, c2, h = int(32 * width), int(64 * width), int(1024 * width)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        side = input_size // 4
        self.penultimate = nn.Sequential(nn.Linear(c2 * side * side, h), nn.ReLU())
        self.classifier = nn.Linear(h, num_classes)

    def forward(self, x):
        return self.classifier(self.penultimate(self.features(x)))


class FastMNISTNet(nn.Module):
    """Wong et al. 2020 MNIST net: conv4x4/2(16)-conv4x4/2(32)-fc100-fc10."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: float = 1.0, input_size: int = 28):
        super().__init__()
        c1, c2, h = int(16 * width), int(32 * width), int(100 * width)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(),
        )
        side = input_size // 4
        self.penultimate = nn.Sequential(nn.Linear(c2 * side * side, h), nn.ReLU())
        self.classifier = nn.Linear(h, num_classes)

    def forward(self, x):
        return self.classifier(self.penultimate(self.features(x)))


class MLP(nn.Module):
    """A ReLU multilayer perceptron on flattened inputs."""

    def __init__(self, in_features: int = 784, num_classes: int = 10, hidden: tuple[int, ...] = (256, 128)):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        prev = in_features
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.ReLU()]
            prev = h
        self.penultimate = nn.Sequential(*layers)
        self.classifier = nn.Linear(prev, num_classes)

    def forward(self, x):
        return self.classifier(self.penultimate(x))
