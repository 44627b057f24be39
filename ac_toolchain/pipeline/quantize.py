"""The Quantize stage (``--quantize int8``): after Export, the dense and the compact model in int8 beside fp32."""

from __future__ import annotations

from pathlib import Path

from ac_toolchain.context import Run, load_model
from ac_toolchain.pipeline.base import State
from ac_toolchain.pipeline.finish import RecordStage, compact_model
from ac_toolchain.quantize.run import FILES, int8_dir, quantize_models
from ac_toolchain.report.records import QuantizeRecord


class Quantize(RecordStage):
    """int8 QDQ ONNX of the dense and the compact model (``<run>/int8/``), their accuracy, bytes and host latency
    (``records/quantize.json``)."""

    name, label, file = "quantize", "Quantize", "quantize"
    parallel = False  # rank 0 alone

    def outputs(self, run: Run) -> list[Path]:
        return [int8_dir(run.dir) / file for file in FILES.values()]

    def run(self, run: Run, state: State) -> State:
        small = state.compact if state.compact is not None else compact_model(run, state.model)
        self.save(run, quantize_models(run, load_model(run, "dense.pt"), small, run.cfg.quantize))
        return self.finish(run, state)

    def restore(self, run: Run, state: State) -> State:
        state.found.quantize = self.load(run, QuantizeRecord)
        return state
