"""BatchNorm folded into the conv (or linear) before it, so that quantization sees one weight per layer."""

from __future__ import annotations

from torch import nn
from torch.fx.experimental.optimization import fuse


def fold_bn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every BatchNorm that directly follows a conv or linear (whose output
    nothing else reads) folded into its weights and bias; same outputs in eval mode. torch.fx's ``fuse`` does the
    work; the model must trace with torch.fx (every zoo and compacted model does)."""
    return fuse(model.eval()).eval()
