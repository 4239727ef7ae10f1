"""The dropout defense (detection paper, section 4.1 / 5.5): two dropout layers with p = 0.5
before the model's last two layers.

Classifier: the single linear head becomes ``Dropout(p) -> Linear(D, H) -> ReLU -> Dropout(p) ->
Linear(H, C)``, i.e. the last two layers are the two linear layers and each gets a dropout layer
in front (a backbone-agnostic reading of "before the two layers of the model"; torchvision's
classifiers end in one linear layer, so the hidden layer H is added). Any dropout the preset put in
the head is replaced.
"""

from __future__ import annotations

from torch import nn


def dropout_defense_head(
    embed_dim: int, num_classes: int, p: float = 0.5, hidden: int = 256
) -> nn.Sequential:
    return nn.Sequential(
        nn.Dropout(p),
        nn.Linear(embed_dim, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(p),
        nn.Linear(hidden, num_classes),
    )


def apply_dropout_defense(
    net: nn.Module, num_classes: int, p: float = 0.5, hidden: int = 256
) -> nn.Module:
    """Replace ``net.head`` of a :class:`~lightning_modules.components.classifier.ClassifierNet`."""
    net.head = dropout_defense_head(net.embed_dim, num_classes, p, hidden)
    return net


def apply_ssd_dropout_defense(net: nn.Module, p: float = 0.5) -> nn.Module:
    """SSD: a dropout layer in front of each of the two last layers, the classification and the
    box-regression convolutions of every feature map (``head.classification_head`` and
    ``head.regression_head``), i.e. ``Dropout2d(p) -> Conv2d`` per map and head."""
    for head in (net.head.classification_head, net.head.regression_head):
        for i, conv in enumerate(head.module_list):
            head.module_list[i] = nn.Sequential(nn.Dropout2d(p), conv)
    return net
