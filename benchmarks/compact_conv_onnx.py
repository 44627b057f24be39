"""Which ONNX expression of CompactConv2d runs faster in onnxruntime?

    python -m benchmarks.compact_conv_onnx [--runs 200]

ResNet-18 (CIFAR, batch 1) at filter+column 0.8, exported twice: with CompactConv2d's own forward (per kernel
tap: strided Slice + Gather of the kept channels, one Concat, one 1x1 Conv) and with a flat gather-GEMM (one
Gather of every kept im2col row from the flattened padded input, then MatMul). Both are checked against the
masked model, then timed round-robin. Writes benchmarks/results/compact_conv_onnx.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from torch import nn

import ac_toolchain as ac
from ac_toolchain.compact import CompactConv2d, compact
from ac_toolchain.export import check_with_onnxruntime, export_onnx
from benchmarks.structure_latency import ort_runner, save, time_round_robin


def flat_gather_forward(self: CompactConv2d, x: torch.Tensor) -> torch.Tensor:
    """The alternative: out[n] = weight @ x_pad.flatten()[idx], idx [K', Ho*Wo] of absolute positions."""
    (ph, pw), (sh, sw), (dh, dw) = self.padding, self.stride, self.dilation
    kh_n, kw_n = self.kernel_size
    x = nn.functional.pad(x, (pw, pw, ph, ph))
    n, c, hp, wp = x.shape
    ho, wo = (hp - dh * (kh_n - 1) - 1) // sh + 1, (wp - dw * (kw_n - 1) - 1) // sw + 1
    rows: torch.Tensor = self.index  # type: ignore[assignment]
    tap, ch = rows // c, rows % c
    start = ch * hp * wp + (tap // kw_n) * dh * wp + (tap % kw_n) * dw  # [K']
    pos = (torch.arange(ho)[:, None] * sh * wp + torch.arange(wo)[None, :] * sw).reshape(1, -1)  # [1, Ho*Wo]
    cols = x.reshape(n, -1)[:, start[:, None] + pos]  # [N, K', Ho*Wo]
    out = torch.matmul(self.weight, cols)  # [N, F, Ho*Wo]
    out = out + self.bias[:, None] if self.bias is not None else out
    return out.reshape(n, -1, ho, wo)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32)
    masked = ac.build_model("resnet18", num_classes=10, in_channels=3, input_size=(32, 32)).eval()
    ac.prune(masked, x, 0.8, "filter+column")
    small = compact(masked, x).eval()
    with tempfile.TemporaryDirectory() as tmp:
        per_tap = export_onnx(small, x, Path(tmp) / "per_tap.onnx")
        original = CompactConv2d.forward
        CompactConv2d.forward = flat_gather_forward  # type: ignore[method-assign]
        try:
            flat = export_onnx(small, x, Path(tmp) / "flat.onnx")
        finally:
            CompactConv2d.forward = original  # type: ignore[method-assign]
        diffs = {"per-tap gather + concat + 1x1 conv": check_with_onnxruntime(per_tap, masked, x),
                 "flat gather + matmul": check_with_onnxruntime(flat, masked, x)}  # fmt: skip
        runners = dict(
            zip(diffs, (ort_runner(per_tap, x, args.threads), ort_runner(flat, x, args.threads)), strict=True)
        )
        samples = time_round_robin(runners, args.runs, warmup=5)
    stats = {k: {"min": min(v), "median": statistics.median(v), "max": max(v)} for k, v in samples.items()}
    result = {"max_abs_diff": diffs, "latency_ms": stats, "runs": args.runs, "threads": args.threads}
    lines = [
        f"# CompactConv2d in onnxruntime: ResNet-18 filter+column 0.8, batch 1, {args.threads} threads, "
        f"{args.runs} runs",
        "", "| ONNX expression | min ms | median ms | max ms | max abs diff vs torch |", "|---|---:|---:|---:|---:|",
        *[f"| {k} | {v['min']:.2f} | {v['median']:.2f} | {v['max']:.2f} | {diffs[k]:.1e} |" for k, v in stats.items()],
        "",
    ]  # fmt: skip
    save("compact_conv_onnx", result, lines)


if __name__ == "__main__":
    main()
