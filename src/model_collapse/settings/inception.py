"""Inception-v3's pool features for the Fréchet Inception Distance (FID; Heusel et al. 2017), from a local
copy of the standard weights: pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (TensorFlow's FID
Inception graph ported to PyTorch, 1,008 classes) or torch-fidelity's copy of the same weights.

The network is the FID variant of Inception-v3 that those weights belong to, written here in plain
PyTorch (no torchvision): the 35x35 and 17x17 mixed blocks average-pool without counting the padding,
and the last block max-pools its pool branch, as TensorFlow's graph does. Its parameter names are
torchvision's (``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.bn.running_mean``, ...), which the
weight files use. Images go in as pytorch-fid feeds them: scaled to [0, 1], resized to 299 x 299
bilinearly, mapped to [-1, 1]; grey images are repeated over three channels. The features are the 2,048
averages of the last block's maps. Nothing is downloaded: without a weight file there is no Inception
FID, and a file that is not these weights is refused in one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

SIDE = 299  # the input side the weights were trained at
FEATURES = 2048
CLASSES = 1008  # TensorFlow's Inception graph has 1,008 outputs; the classifier is loaded, not used
BATCH = 50  # images per forward pass


class _ConvBN(nn.Module):
    """A convolution without bias, batch normalisation (eps 1e-3) and ReLU."""

    def __init__(self, channels_in: int, channels_out: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(channels_in, channels_out, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(channels_out, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


# A branch is a sequence of steps, each a layer's name or a tuple of layers applied to the same input
# whose outputs are concatenated. The pool branch comes last: "average" (3x3, stride 1, then the layer
# branch_pool), "max" (the same with a max pool) or "reduce" (3x3 max pool of stride 2, no layer).
_Branch = tuple[str | tuple[str, ...], ...]


class _Mixed(nn.Module):
    """One of Inception's mixed blocks: parallel branches of convolutions, concatenated."""

    def __init__(self, layers: dict[str, tuple], branches: Sequence[_Branch], pool: str):
        super().__init__()
        for name, shape in layers.items():
            self.add_module(name, _ConvBN(*shape))
        self.branches, self.pool = branches, pool

    def _run(self, branch: _Branch, x: torch.Tensor) -> torch.Tensor:
        for step in branch:
            if isinstance(step, tuple):
                x = torch.cat([self.get_submodule(name)(x) for name in step], dim=1)
            else:
                x = self.get_submodule(step)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [self._run(branch, x) for branch in self.branches]
        if self.pool == "reduce":
            outputs.append(F.max_pool2d(x, kernel_size=3, stride=2))
        elif self.pool == "max":
            outputs.append(self.get_submodule("branch_pool")(F.max_pool2d(x, kernel_size=3, stride=1, padding=1)))
        else:
            pooled = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
            outputs.append(self.get_submodule("branch_pool")(pooled))
        return torch.cat(outputs, dim=1)


def _block_a(channels: int, pool_features: int) -> _Mixed:  # 35 x 35
    layers = {
        "branch1x1": (channels, 64, 1),
        "branch5x5_1": (channels, 48, 1),
        "branch5x5_2": (48, 64, 5, 1, 2),
        "branch3x3dbl_1": (channels, 64, 1),
        "branch3x3dbl_2": (64, 96, 3, 1, 1),
        "branch3x3dbl_3": (96, 96, 3, 1, 1),
        "branch_pool": (channels, pool_features, 1),
    }
    branches = [("branch1x1",), ("branch5x5_1", "branch5x5_2"), ("branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3")]
    return _Mixed(layers, branches, "average")


def _block_b(channels: int) -> _Mixed:  # 35 x 35 -> 17 x 17
    layers = {
        "branch3x3": (channels, 384, 3, 2),
        "branch3x3dbl_1": (channels, 64, 1),
        "branch3x3dbl_2": (64, 96, 3, 1, 1),
        "branch3x3dbl_3": (96, 96, 3, 2),
    }
    return _Mixed(layers, [("branch3x3",), ("branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3")], "reduce")


def _block_c(channels: int, width: int) -> _Mixed:  # 17 x 17, factorised 7 x 7 convolutions
    row, column = ((1, 7), (0, 3)), ((7, 1), (3, 0))  # (kernel, padding)
    layers = {
        "branch1x1": (channels, 192, 1),
        "branch7x7_1": (channels, width, 1),
        "branch7x7_2": (width, width, row[0], 1, row[1]),
        "branch7x7_3": (width, 192, column[0], 1, column[1]),
        "branch7x7dbl_1": (channels, width, 1),
        "branch7x7dbl_2": (width, width, column[0], 1, column[1]),
        "branch7x7dbl_3": (width, width, row[0], 1, row[1]),
        "branch7x7dbl_4": (width, width, column[0], 1, column[1]),
        "branch7x7dbl_5": (width, 192, row[0], 1, row[1]),
        "branch_pool": (channels, 192, 1),
    }
    double = tuple(f"branch7x7dbl_{k}" for k in range(1, 6))
    return _Mixed(layers, [("branch1x1",), ("branch7x7_1", "branch7x7_2", "branch7x7_3"), double], "average")


def _block_d(channels: int) -> _Mixed:  # 17 x 17 -> 8 x 8
    layers = {
        "branch3x3_1": (channels, 192, 1),
        "branch3x3_2": (192, 320, 3, 2),
        "branch7x7x3_1": (channels, 192, 1),
        "branch7x7x3_2": (192, 192, (1, 7), 1, (0, 3)),
        "branch7x7x3_3": (192, 192, (7, 1), 1, (3, 0)),
        "branch7x7x3_4": (192, 192, 3, 2),
    }
    seven = tuple(f"branch7x7x3_{k}" for k in range(1, 5))
    return _Mixed(layers, [("branch3x3_1", "branch3x3_2"), seven], "reduce")


def _block_e(channels: int, pool: str) -> _Mixed:  # 8 x 8, split 3 x 3 convolutions
    layers = {
        "branch1x1": (channels, 320, 1),
        "branch3x3_1": (channels, 384, 1),
        "branch3x3_2a": (384, 384, (1, 3), 1, (0, 1)),
        "branch3x3_2b": (384, 384, (3, 1), 1, (1, 0)),
        "branch3x3dbl_1": (channels, 448, 1),
        "branch3x3dbl_2": (448, 384, 3, 1, 1),
        "branch3x3dbl_3a": (384, 384, (1, 3), 1, (0, 1)),
        "branch3x3dbl_3b": (384, 384, (3, 1), 1, (1, 0)),
        "branch_pool": (channels, 192, 1),
    }
    branches: list[_Branch] = [
        ("branch1x1",),
        ("branch3x3_1", ("branch3x3_2a", "branch3x3_2b")),
        ("branch3x3dbl_1", "branch3x3dbl_2", ("branch3x3dbl_3a", "branch3x3dbl_3b")),
    ]
    return _Mixed(layers, branches, pool)


MIXED = tuple(f"Mixed_{name}" for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"))


class FIDInception(nn.Module):
    """Inception-v3 as the FID weights define it, up to its 2,048 pool features."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = _ConvBN(3, 32, 3, 2)
        self.Conv2d_2a_3x3 = _ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = _ConvBN(32, 64, 3, 1, 1)
        self.Conv2d_3b_1x1 = _ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = _ConvBN(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = _block_a(192, 32), _block_a(256, 64), _block_a(288, 64)
        self.Mixed_6a = _block_b(288)
        self.Mixed_6b, self.Mixed_6c = _block_c(768, 128), _block_c(768, 160)
        self.Mixed_6d, self.Mixed_6e = _block_c(768, 160), _block_c(768, 192)
        self.Mixed_7a = _block_d(768)
        self.Mixed_7b, self.Mixed_7c = _block_e(1280, "average"), _block_e(2048, "max")
        self.fc = nn.Linear(FEATURES, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool features (N, 2048) of images (N, 3, 299, 299) in [-1, 1]."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in MIXED:
            x = self.get_submodule(name)(x)
        return x.mean(dim=(2, 3))


def load_inception(path: str | Path, device: torch.device) -> FIDInception:
    """The network with the weights in ``path``, in evaluation mode; a file that cannot be read, or that
    holds other tensors than these weights', is refused in one line."""
    path = Path(path).expanduser()
    where = f"setting.inception_weights: {path}"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist") from None
    except Exception as error:  # torch raises several types for a damaged or pickled-object file
        raise ConfigError(f"{where} is not a PyTorch weight file ({type(error).__name__})") from None
    model = FIDInception()
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{where} is not a mapping of tensor names to tensors")
    expected = {k: v.shape for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    found = {k: v.shape for k, v in state.items() if not k.endswith("num_batches_tracked")}
    if expected != found:
        missing, foreign = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
        shaped = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
        what = (
            f"missing {missing[0]}"
            if missing
            else f"unknown {foreign[0]}"
            if foreign
            else f"{shaped[0]} of shape {tuple(found[shaped[0]])}, not {tuple(expected[shaped[0]])}"
        )
        raise ConfigError(
            f"{where} does not hold the FID Inception weights (pt_inception-2015-12-05-6726825d.pth): {what}"
        )
    model.load_state_dict(state, strict=False)  # num_batches_tracked: absent from the converted files
    return model.to(device).eval()


@torch.no_grad()
def inception_features(model: FIDInception, images: np.ndarray, device: torch.device) -> np.ndarray:
    """Pool features (N, 2048), float64, of uint8 images (N, C, H, W) with C 1 or 3, as pytorch-fid
    computes them: [0, 1], bilinear resize to 299 x 299, [-1, 1]."""
    batches = []
    for start in range(0, len(images), BATCH):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + BATCH])).to(device).float() / 255
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(SIDE, SIDE), mode="bilinear", align_corners=False)
        batches.append(model(2 * x - 1).double().cpu().numpy())
    return np.concatenate(batches) if batches else np.zeros((0, FEATURES))
