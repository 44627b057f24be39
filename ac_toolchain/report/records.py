"""The typed report of a run: ``report.json`` is ``dataclasses.asdict(Report)`` and is read back with
:func:`read_report`. The schema is documented once, in docs/report.md.

Each pipeline stage (ac_toolchain/pipeline/) fills its part: Evaluate the two :class:`Measurement`s, the rounds
the per-layer rows, ADMM log and search summaries, Compact and Export the equivalence checks, Compile the
:class:`CompileRecord`, Bench one :class:`BenchEntry` per device, and Report the rest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ac_toolchain.config import CompressConfig, goals
from ac_toolchain.runs import from_record


@dataclass
class Measurement:
    """Test top-1 and the non-zero structure's size of one model (``ac count``)."""

    accuracy: float
    params: int
    flops: int  # multiply-accumulates of one sample


@dataclass
class DenseTraining:
    """How dense.pt came to be (``records/dense.json``): trained here, or loaded with ``--dense`` (no epochs)."""

    loaded: str | None = None  # the --dense file it was loaded from
    epochs: int | None = None  # epochs trained: train.epochs, or fewer when validation top-1 stopped rising
    max_epochs: int | None = None  # train.epochs, the cap
    best_epoch: int | None = None  # the last epoch that beat the best by more than the split's noise
    val_accuracy: float | None = None  # dense.pt's (the last epoch's) validation top-1; None without a split


@dataclass
class Method:
    """How the per-layer rates were chosen and reached (from the config)."""

    search: str  # anneal | uniform
    prune: str  # admm | oneshot
    purify: bool
    scheme: str
    rate: float
    rates_file: str | None = None
    goals: dict[str, float] = field(default_factory=dict)  # {"params": 60.0}: the final reduction, by objective
    rounds: int = 1

    @classmethod
    def of(cls, cfg: CompressConfig) -> Method:
        return cls(cfg.search.method, cfg.prune.method, cfg.purify.enabled, cfg.prune.scheme, cfg.prune.rate,
                   cfg.prune.rates or None, goals(cfg.search), cfg.search.rounds)  # fmt: skip


@dataclass
class LayerRow:
    """One prunable layer after the last round: its hard-prune plan, ADMM residual and purification."""

    name: str
    scheme: str
    rate: float
    groups_kept: int
    groups_total: int
    columns_kept: int
    columns_total: int
    coupled_to: str | None = None
    residual: float | None = None  # ‖W − Z‖ / ‖W‖ after the last ADMM iteration
    purified: dict[str, dict[str, int]] = field(default_factory=dict)  # {"dead": {"filters", "columns"}, ...}


@dataclass
class AdmmIteration:
    iteration: int
    rho: float
    loss: float
    val_accuracy: float | None
    residual: dict[str, float]  # per layer ‖W − Z‖ / ‖W‖
    max_residual: float


@dataclass
class SearchSummary:
    """One round's search (``rounds/<r>/search.json``)."""

    round: int
    objective: str
    reduction: float
    proposals: int
    seconds: float
    proposals_per_minute: float
    best: dict[str, Any]  # the best proposal's point (search.anneal.Point as written)
    units: list[dict[str, Any]]  # the decision units (search.space.Unit as written)


@dataclass
class DistillCost:
    """What distilling from the dense model cost one training stage: the teacher's forward passes."""

    teacher_seconds: float
    epochs: int  # epochs trained with the teacher (those a resumed stage ran before are not counted)


@dataclass
class LayerSetting:
    rate: float
    scheme: str


@dataclass
class CompileRecord:
    """The TVM build of the compressed model for the run's target (``<run>/<target>/manifest.json``)."""

    target: str
    tvm_target: dict[str, Any]
    status: str
    dir: str | None = None
    manifest: str | None = None
    files: Any = None
    build_seconds: float | None = None
    schedules: Any = None
    kernel_rows: Any = None
    tuning: Any = None
    max_abs_diff: float | None = None  # |TVM − torch| on the run's example, where the build runs here


@dataclass
class BenchEntry:
    """Dense vs compressed on one bench device (the full samples are in ``json``)."""

    metric: str
    speedup: float
    table: str
    output_check: dict[str, Any] | None
    json: str


@dataclass
class LatencyPrediction:
    """The speed-up the latency tables predict (with ``--latency-x``), to set beside the measured one."""

    device: str
    metric: str
    unit: str
    dense: float
    compressed: float
    predicted_speedup: float
    tables: str


@dataclass
class EquivalenceCheck:
    """The largest output difference of a transformed model (compact, ONNX) against the masked model."""

    max_abs_diff: float


INT8_VARIANTS = ("dense fp32", "dense int8", "compact fp32", "compact int8")  # the Quantize stage's four models


@dataclass
class Int8Variant:
    """One model of the int8 comparison, an ONNX file run by onnxruntime on the run's test split."""

    top1: float
    bytes: int
    host_ms: float  # median seconds x 1000 of one image through onnxruntime on this machine's CPU, one thread
    path: str


@dataclass
class QuantizeRecord:
    """The Quantize stage (or ``ac quantize RUN``): ``records/quantize.json``."""

    method: str  # the activation calibrator
    activations: str  # int8 or uint8, per tensor
    weights: str
    calib_batches: int  # training batches actually used
    calib_batch_size: int
    test_images: int
    variants: dict[str, Int8Variant]  # by INT8_VARIANTS name, and "compact QAT int8" with quantize.qat_epochs
    size_ratio: float  # compact fp32 bytes / compact int8 bytes
    simulated_top1: float | None = None  # our torch simulation of the compact int8 model (docs/quantize.md)


@dataclass
class Findings:
    """What the back half's stages measured so far; the Report stage makes the :class:`Report` of it."""

    dense: Measurement | None = None
    compressed: Measurement | None = None
    dense_training: DenseTraining | None = None  # from the Dense stage
    latency: LatencyPrediction | None = None
    compact_max_abs_diff: float | None = None
    onnx_max_abs_diff: float | None = None
    compile: CompileRecord | None = None
    bench: dict[str, BenchEntry] = field(default_factory=dict)
    quantize: QuantizeRecord | None = None


@dataclass
class Report:
    model: str
    dataset: str
    target: str  # the compile target
    dense: Measurement
    compressed: Measurement
    accuracy_drop_points: float
    ratios: dict[str, float]  # params / flops: dense ÷ compressed
    method: Method
    compact_max_abs_diff: float
    onnx_max_abs_diff: float
    compile: CompileRecord
    dense_training: DenseTraining | None = None  # how dense.pt came to be (None: a run from before the record)
    layers: list[LayerRow] = field(default_factory=list)
    admm: list[AdmmIteration] = field(default_factory=list)  # the last round's iterations
    search: list[SearchSummary] = field(default_factory=list)  # one per round that searched
    purification: dict[str, dict[str, Any]] = field(default_factory=dict)  # totals of the last round, by part
    rates: dict[str, LayerSetting] = field(default_factory=dict)  # the last round's spec
    bench: dict[str, BenchEntry] = field(default_factory=dict)  # by bench device
    latency: LatencyPrediction | None = None
    quantize: QuantizeRecord | None = None  # with --quantize int8 or after `ac quantize RUN`
    distill: dict[str, DistillCost] = field(default_factory=dict)  # training stage → teacher cost (distill.enabled)
    artifacts: dict[str, str] = field(default_factory=dict)  # name → path
    timings: dict[str, float] = field(default_factory=dict)  # stage → seconds
    config: dict[str, Any] = field(default_factory=dict)  # the resolved config (config.toml)
    versions: dict[str, str] = field(default_factory=dict)
    plots: dict[str, str] = field(default_factory=dict)  # name → path relative to the run


def read_report(path: Path) -> Report:
    data = json.loads(path.read_text())
    method = data.get("method", {})
    if "targets" in method:  # reports written before the reduction was called the goal
        method["goals"] = method.pop("targets")
    return from_record(Report, data)

