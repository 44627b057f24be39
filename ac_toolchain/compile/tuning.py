"""MetaSchedule tuning of the ops TVM compiles itself (``--tune-trials N``), logged in ``<run>/<target>/tuning/``.

The convolutions (with their bias, ReLU and shortcut adds) run on the kernels/ compact-conv kernel whatever the
tuning; what is left to TVM -- pools, clips, depthwise convolutions, the linear layer -- is legalised to TIR and
tuned with MetaSchedule's evolutionary search, the candidates built and timed on this machine. So only targets
that run here (x86) can be tuned.
The database (``database_workload.json`` / ``database_tuning_record.json``) and the per-task logs stay in the run:
a later ``--tune-trials`` continues from the records there, and a later build of the same target applies them.

Candidates are built in this process (``InProcessBuilder``), not by TVM's ``LocalBuilder``: that one starts a fresh
process pool for every batch, and each worker imports ``tvm.s_tir.tensor_intrin`` -- 64 s on this 2-core machine,
so every batch cost 70-90 s however small (and its default 30 s timeout made most candidates "build errors"). In
process, a candidate builds in ~0.15 s; the import is paid once. Candidates still run in TVM's ``LocalRunner``
worker processes, so a crashing candidate cannot take the compiler down.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ac_toolchain.compile.targets import Target
from ac_toolchain.errors import TargetError

TUNING_DIR = "tuning"
RECORDS = "database_tuning_record.json"


def check_tunable(target: Target, trials: int) -> None:
    """Tuning times candidates on this machine: a target that does not run here cannot be tuned."""
    if trials < 0:
        raise TargetError(f"--tune-trials must be >= 0, got {trials}")
    if trials and not target.runs_here:
        raise TargetError(
            f"--tune-trials times candidates on this machine, so it tunes only targets that run here (x86); "
            f"target {target.name} cannot be tuned here — drop --tune-trials, or compile for x86"
        )


def has_records(work_dir: Path) -> bool:
    records = work_dir / RECORDS
    return records.is_file() and records.stat().st_size > 0


def tuning_target(target: Target) -> Any:
    """The TVM target of a tuned build: MetaSchedule's CPU rules need the core count."""
    import tvm

    return tvm.target.Target({**target.tvm_target, "num-cores": os.cpu_count() or 1})


def in_process_builder() -> Any:
    """A MetaSchedule builder that compiles candidates here, one after the other (see the module docstring)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build, default_export

    @derived_object
    class InProcessBuilder(PyBuilder):
        def build(self, build_inputs: list[Any]) -> list[Any]:
            return [self._one(item) for item in build_inputs]

        @staticmethod
        def _one(item: Any) -> Any:
            try:
                return BuilderResult(default_export(default_build(item.mod, item.target, None)), None)
            except Exception as err:  # a candidate that does not build is a failed trial, not a failed tuning
                return BuilderResult(None, f"InProcessBuilder: {type(err).__name__}: {err}")

    return InProcessBuilder()


def tune(mod: Any, tvm_target: Any, trials: int, work_dir: Path) -> Any:
    """Lower mod to TIR, tune it for ``trials`` candidates in all (0: only apply what work_dir holds) and return
    it with the best schedules found applied."""
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    work_dir.mkdir(parents=True, exist_ok=True)
    with tvm_target:
        mod = relax.get_pipeline("zero")(mod)
    if trials:
        ms.relax_integration.tune_relax(
            mod, params={}, target=tvm_target, work_dir=str(work_dir), max_trials_global=trials,
            builder=in_process_builder(), runner=ms.runner.LocalRunner(),
        )  # fmt: skip
    with tvm_target:
        return relax.transform.MetaScheduleApplyDatabase(str(work_dir))(mod)
