"""The networks gliomaseg trains, built by name from the config: the recipe's VNet3d and three from MONAI."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from gliomaseg.config import ExperimentConfig, TrainConfig
from gliomaseg.labels import MODALITIES, NUM_CLASSES
from gliomaseg.model.cpu_convolution import route_convolutions_to_onednn
from gliomaseg.model.targets import targets_named
from gliomaseg.model.vnet3d import LEAN_FILTERS, VNet3d


# MONAI is imported by the networks that need it: importing it costs ~2 s, more than a whole
# prediction with the packaged VNet3d.


def _monai_vnet(in_channels: int, out_channels: int, dropout: float) -> torch.nn.Module:
    from monai.networks.nets import VNet

    network = VNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        dropout_prob_down=dropout,
        dropout_prob_up=(dropout, dropout),
    )
    # MONAI fixes Dropout3d(0.5) on the skips of its two shallowest up blocks: ``dropout`` governs them too
    for module in network.modules():
        if isinstance(module, torch.nn.Dropout3d):
            module.p = dropout
    return network


def _segresnet(in_channels: int, out_channels: int, dropout: float) -> torch.nn.Module:
    from monai.networks.nets import SegResNet

    return SegResNet(
        spatial_dims=3, in_channels=in_channels, out_channels=out_channels, init_filters=16, dropout_prob=dropout or None
    )


def _dynunet(in_channels: int, out_channels: int, dropout: float) -> torch.nn.Module:
    # nnU-Net-like 5-level U-Net; 16-voxel divisibility matches the other two networks
    from monai.networks.nets import DynUNet

    return DynUNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=[3, 3, 3, 3, 3],
        strides=[1, 2, 2, 2, 2],
        upsample_kernel_size=[2, 2, 2, 2],
        filters=[16, 32, 64, 128, 256],
        norm_name="instance",
        dropout=dropout or None,
    )


NETWORKS: dict[str, Callable[[int, int, float], torch.nn.Module]] = {
    "vnet3d": VNet3d,
    "vnet3d-lean": partial(VNet3d, filters=LEAN_FILTERS),
    "monai-vnet": _monai_vnet,
    "segresnet": _segresnet,
    "dynunet": _dynunet,
}

SIZE_MULTIPLE = 16
"""Every network here halves the grid four times: input sides must be multiples of 16."""


def build_network(
    name: str, dropout: float = 0.0, in_channels: int = len(MODALITIES), out_channels: int = NUM_CLASSES
) -> torch.nn.Module:
    """A freshly initialised network; ``name`` is one of NETWORKS."""
    if name not in NETWORKS:
        raise ValueError(f"unknown model '{name}' (choose from {', '.join(NETWORKS)})")
    return route_convolutions_to_onednn(NETWORKS[name](in_channels, out_channels, dropout))


def network_inputs(config: ExperimentConfig) -> int:
    """The network's input channels: the sequences (and extra channels), then, for a cascade second stage, the
    first stage's probability of each target."""
    return config.preprocess.channels + (targets_named(config.train.targets).channels if config.train.cascade else 0)


def network_for(train_config: TrainConfig, in_channels: int = len(MODALITIES)) -> torch.nn.Module:
    """The untrained network a training configuration describes (model, dropout, output targets),
    for ``in_channels`` inputs (``PreprocessConfig.channels``)."""
    return build_network(train_config.model, train_config.dropout, in_channels, targets_named(train_config.targets).channels)
