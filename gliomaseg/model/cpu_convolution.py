"""3D convolutions of single-image inference on oneDNN, where PyTorch's CPU heuristic would not send them.

PyTorch picks a CPU convolution kernel by a rule written for 2D images: with a batch of one, a
3x3x3 kernel and N*C*D*H <= 20480, it takes its unblocked reference kernel (``slow_conv3d``),
"faster for some cases" in 2D. In a 3D network most deep layers of a one-image forward pass fall
under it (64 channels at 16^3, 128 at 8^3, the 4-channel input at 64^3): measured on 2 cores, the
packaged VNet3d's 64^3 forward pass took 0.78 s, 0.49 s with every convolution on oneDNN, outputs
equal to 3e-6. Training batches of two or more already go to oneDNN, as does anything that needs
gradients, half precision or another device here: those keep PyTorch's own choice.
"""

from __future__ import annotations

import torch
from torch import nn


class OneDNNConv3d(nn.Conv3d):
    """``nn.Conv3d`` whose gradient-free float32 CPU calls always run on oneDNN (same weights, same outputs)."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if (
            input.device.type == "cpu"
            and input.dtype == weight.dtype == torch.float32
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and not torch.is_autocast_enabled("cpu")
            and not (torch.is_grad_enabled() and (input.requires_grad or weight.requires_grad))
        ):
            return torch.mkldnn_convolution(input, weight, bias, self.padding, self.stride, self.dilation, self.groups)
        return super()._conv_forward(input, weight, bias)


def route_convolutions_to_onednn(network: nn.Module) -> nn.Module:
    """``network`` with every plain ``nn.Conv3d`` made a ``OneDNNConv3d`` (in place; parameters,
    state-dict keys and outputs unchanged), when this PyTorch build has oneDNN."""
    if torch.backends.mkldnn.is_available():
        for module in network.modules():
            if type(module) is nn.Conv3d:
                module.__class__ = OneDNNConv3d
    return network
