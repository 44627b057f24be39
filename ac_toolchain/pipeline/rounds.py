"""The pruning half of the pipeline: the dense model, then rounds of
``Search -> ADMM -> Hard prune + retrain -> Purify`` (``search.method = uniform``: one rate instead of the search;
``prune.method = oneshot``: no ADMM). Masks always come from a stage's saved products (``rounds/<r>/masks.pt``,
``purified.pt``), never from re-projecting weights; a later round keeps every structure an earlier one removed.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from ac_toolchain import distributed
from ac_toolchain.compact import Shrunk, shrink
from ac_toolchain.config import CompressConfig, goal_flags, goals
from ac_toolchain.context import Run, console, round_spec, train_stage
from ac_toolchain.cost.analytic import called_modules
from ac_toolchain.distill import Distillation, freeze
from ac_toolchain.errors import ConfigError, TrainingError
from ac_toolchain.graph import trace
from ac_toolchain.latency_tables import latency_model, read_model, write_model
from ac_toolchain.pipeline.base import (
    Purification,
    RoundRecord,
    Stage,
    State,
    atomic_save,
    atomic_write_text,
    fit_settings,
    model_graph,
    round_dir,
    val_accuracy,
    write_record,
)
from ac_toolchain.plateau import Plateau
from ac_toolchain.prune.admm import Admm, AdmmSettings
from ac_toolchain.prune.purify import RedundantReport, purify_dead, purify_redundant
from ac_toolchain.prune.schemes import LayerPlan, Masks, apply_masks, project
from ac_toolchain.prune.spec import load_spec, rates_and_schemes, spec_to_json
from ac_toolchain.report.records import AdmmIteration, DenseTraining, DistillCost, SearchSummary
from ac_toolchain.runs import from_record, load_state_dict, read_record, safe_load, safe_name
from ac_toolchain.scheme_registry import DEFAULT_SCHEME, SEARCH_SCHEMES
from ac_toolchain.search.anneal import Annealer, AnnealSettings
from ac_toolchain.search.proxy import Proxy, ProxySettings
from ac_toolchain.search.space import Space, combine, spec_of
from ac_toolchain.train import (
    Controller,
    FitSettings,
    MaskController,
    correct_per_image,
    cross_entropy,
    evaluate,
    make_loader,
    recalibrate_bn,
)


def latency_path(run: Run) -> Path:
    """``<run>/latency/<device>.json``: the latency tables of the run's model on the platform's latency device."""
    return run.dir / "latency" / f"{safe_name(run.platform.require_latency_device())}.json"


class LatencyTables(Stage):
    """The latency objective's tables (ac_toolchain/latency_tables.py), measured on the bench device before anything
    trains (cells are cached across runs); the final target is checked against them at once."""

    name, label = "latency tables", "Latency tables"
    parallel = False  # measured by rank 0 on the bench device

    def products(self, run: Run) -> list[Path]:
        return [latency_path(run)]

    def run(self, run: Run, state: State) -> State:
        device = run.platform.require_latency_device()
        console.print(f"measuring latency tables on {device} (cached cells are reused)")
        with tempfile.TemporaryDirectory() as work:
            model = latency_model(state.model.cpu(), run.example, device, Path(work))
        state.model.to(run.device)
        write_model(model, self.products(run)[0])
        return self.finish(run, state)

    def restore(self, run: Run, state: State) -> State:
        _space(run, state, "latency").check_reachable(goals(run.cfg.search)["latency"])
        return state


class Dense(Stage):
    """Load the dense model (``--dense``, or this run's dense.pt) or train it until validation top-1 stops rising
    (``train.patience``); how it came to be goes to ``records/dense.json``. A model that did not learn stops the
    run here (:func:`check_learned`), before anything long, with dense.pt kept."""

    name, label = "dense", "Dense"

    def products(self, run: Run) -> list[Path]:
        return [run.dir / "dense.pt"]

    def record(self, run: Run) -> Path:
        return run.dir / "records" / "dense.json"

    def run(self, run: Run, state: State) -> State:
        cfg = run.cfg
        if cfg.model.checkpoint:  # checked before the run directory was made (context.check_model)
            source = Path(cfg.model.checkpoint).expanduser()
            load_state_dict(state.model, source)
            console.print(f"dense model loaded from {source}")
            record = DenseTraining(loaded=str(source), val_accuracy=val_accuracy(run, state.model))
        else:
            record = train_dense(run, state.model, self.name)
        write_record(record, self.record(run))  # before dense.pt, the stage's product: a done stage has both
        atomic_save(state.model.state_dict(), run.dir / "dense.pt")
        return self._ready(run, state, record)

    def restore(self, run: Run, state: State) -> State:
        load_state_dict(state.model, run.dir / "dense.pt")
        console.print(f"dense model loaded from {run.dir / 'dense.pt'}")
        saved = self.record(run)
        return self._ready(run, state, read_record(DenseTraining, saved) if saved.is_file() else None)

    def _ready(self, run: Run, state: State, record: DenseTraining | None) -> State:
        state.found.dense_training = record
        check_learned(run, state.model, record)  # a resumed run stops here again
        return with_teacher(run, state)


def train_dense(run: Run, model: nn.Module, stage: str) -> DenseTraining:
    """Train with checkpoints until validation top-1 plateaus (``train.patience``, at most ``train.epochs``; a
    new best must beat the old by more than the split's noise); the model keeps its last epoch's weights. A
    resumed training ends as an uninterrupted one would."""
    t = run.cfg.train
    plateau = Plateau(lambda m: val_accuracy(run, m), t.patience, images=len(run.splits.val))
    train_stage(run, model, stage, fit_settings(run, t.epochs, t.lr), [plateau])
    record = DenseTraining(epochs=plateau.epoch, max_epochs=t.epochs, best_epoch=plateau.best_epoch,
                           val_accuracy=plateau.last_score)  # fmt: skip
    best = f"last best at epoch {record.best_epoch}; validation top-1 {record.val_accuracy:.2%}" if (
        record.val_accuracy is not None) else "no validation split: the last epoch kept"  # fmt: skip
    console.print(f"dense: {record.epochs} of {t.epochs} epochs trained; {best}")
    return record


def check_learned(run: Run, model: nn.Module, record: DenseTraining | None) -> None:
    """Stop with :class:`TrainingError` when the dense model's validation top-1 (test without a validation split)
    is less than ``train.min_above_chance`` points above chance (1 / classes): pruning a model that did not
    learn wastes the whole run."""
    t = run.cfg.train
    measured = _checked_accuracy(run, model, record) if t.min_above_chance > 0 else None
    if measured is None:
        return
    split, accuracy = measured
    chance = 1 / run.splits.num_classes
    if accuracy >= chance + t.min_above_chance / 100:
        return
    seen = (f"the dense model's {split} top-1 is {accuracy:.2%}, less than {t.min_above_chance:g} points above "
            f"chance ({chance:.2%} for {run.splits.num_classes} classes)")  # fmt: skip
    off = "; --train-min-above-chance 0 skips this check"
    if record is not None and record.loaded:
        raise TrainingError(f"{seen}: --dense {record.loaded} is not a trained model of this task; pass its trained "
                            f"weights with --dense FILE, or drop --dense to train it here{off}")  # fmt: skip
    trained = f" after {record.epochs} epochs" if record is not None else ""
    raise TrainingError(f"{seen}{trained}: it did not learn. Train longer (--train-epochs, now {t.epochs}), change "
                        f"the learning rate (--train-lr, now {t.lr:g}) or pass a trained model with --dense FILE; "
                        f"this one is kept in {run.dir / 'dense.pt'}{off}")  # fmt: skip


def _checked_accuracy(run: Run, model: nn.Module, record: DenseTraining | None) -> tuple[str, float] | None:
    """(split, top-1) the chance check uses: validation (the record's, else measured), else test; None: no data."""
    if record is not None and record.val_accuracy is not None:
        return "validation", record.val_accuracy
    val = val_accuracy(run, model)
    if val is not None:
        return "validation", val
    if len(run.splits.test) == 0:
        return None
    return "test", evaluate(model, make_loader(run.splits.test, 256, shuffle=False), run.device, label="")


def with_teacher(run: Run, state: State) -> State:
    """The dense model is ready (trained, loaded or restored): with ``distill.enabled``, a frozen copy of it
    becomes the teacher of every later training stage and of the search's proxy fine-tune."""
    state.teacher = freeze(state.model) if run.cfg.distill.enabled else None
    return state


def distiller(run: Run, state: State) -> Distillation | None:
    """The run's distillation criterion, or None without ``distill.enabled``."""
    if not run.cfg.distill.enabled:
        return None
    if state.teacher is None:  # every pipeline runs or restores the Dense stage first
        raise RuntimeError("distill.enabled but no teacher: the Dense stage makes it")
    return Distillation.from_config(state.teacher, run.cfg.distill)


class RoundStage(Stage):
    """A stage of round ``r``: named by ``title`` (``{r}`` filled in), products ``files`` in ``rounds/<r>/``."""

    title = "stage-r{r}"
    files: tuple[str, ...] = ()

    def __init__(self, r: int) -> None:
        self.r, self.name = r, self.title.format(r=r)

    def products(self, run: Run) -> list[Path]:
        return [round_dir(run, self.r) / name for name in self.files]

    def train(self, run: Run, state: State, settings: FitSettings, controllers: list[Controller],
              model: nn.Module | None = None) -> None:  # fmt: skip
        """:func:`train_stage` of ``model`` (the state's by default) with the run's criterion; with distillation,
        the teacher's cost is written to ``rounds/<r>/distill-<stage>.json`` (before the stage's products, so a
        done stage has it)."""
        criterion = distiller(run, state)
        model = state.model if model is None else model
        epochs = train_stage(run, model, self.name, settings, controllers, criterion or cross_entropy)
        if criterion is not None:
            write_record(DistillCost(round(criterion.seconds, 3), epochs), self._distill_file(run))

    def train_masked(self, run: Run, state: State, settings: FitSettings, masks: Masks) -> None:
        """Masked training of the state's model; with ``prune.compact``, of its shrunk copy (the same training on
        fewer weights, tests/compact/test_shrink.py), written back into it. A resumed stage shrinks the same
        model with the same masks again, so its checkpoints fit."""
        if not run.cfg.prune.compact:
            self.train(run, state, settings, [MaskController(masks)])
            return
        small = shrunk(run, state.model, masks)
        self.train(run, state, settings, [MaskController(small.cut(masks))], small.model)
        small.expand_into(state.model)

    def restore_distill(self, run: Run, state: State) -> None:
        if self._distill_file(run).is_file():
            state.current().distill[self.name] = read_record(DistillCost, self._distill_file(run))

    def _distill_file(self, run: Run) -> Path:
        return round_dir(run, self.r) / f"distill-{self.name}.json"


def shrunk(run: Run, model: nn.Module, masks: Masks) -> Shrunk:
    """The model (masks applied) with its pruned filters and channels removed, for training and purification."""
    small = shrink(model, run.example, masks)
    total = sum(p.numel() for p in model.parameters())
    console.print(f"working on the compacted model: {small.params():,} of {total:,} parameters")
    return small


class RoundStart(RoundStage):
    """The uniform round: one rate for every layer — the one that meets the round's reduction goal, or
    ``prune.rate`` / ``prune.rates`` without a goal; written to ``rounds/<r>/rates.json``."""

    title, files, label = "round {r}: rates", ("rates.json",), "Search"

    def run(self, run: Run, state: State) -> State:
        goal = round_goal(run.cfg, self.r)
        if goal is None:
            spec = round_spec(run.cfg, model_graph(run, state.model).layers)
        else:
            space = _space(run, state, goal[0])
            schemes = [run.cfg.prune.scheme] * len(space.units)
            spec = spec_of(space.units, space.rescale([0.5] * len(space.units), schemes, goal[1]), schemes)
            console.print(f"uniform rate {next(iter(spec.values())).rate:.4f} meets {goal[1]:.2f}x {goal[0]}")
        atomic_write_text(spec_to_json(spec), self.products(run)[0])
        return self.finish(run, state)

    def restore(self, run: Run, state: State) -> State:
        state.rounds.append(RoundRecord(self.r, load_spec(self.products(run)[0])))
        return state


def round_goal(cfg: CompressConfig, r: int) -> tuple[str, float] | None:
    """(objective, reduction) of round ``r``: the final reduction ``X`` reached in equal factors, ``X^(r/N)``."""
    given = goals(cfg.search)
    if not given:
        return None
    objective, final = next(iter(given.items()))
    return objective, final ** (r / cfg.search.rounds)


def _space(run: Run, state: State, objective: str) -> Space:
    """The search space over the current model's weights; earlier rounds' masks stay."""
    latency = read_model(latency_path(run)) if objective == "latency" else None
    model = state.model.cpu()
    space = Space(trace(model, run.example), objective, called_modules(model, run.example), base=state.masks,
                  latency=latency)  # fmt: skip
    state.model.to(run.device)
    return space


class SearchStage(RoundStage):
    """Simulated annealing to the round's goal; the best proposal becomes ``rounds/<r>/rates.json``.

    Each proposal is a line of ``search.jsonl``; the annealer's state is saved atomically after each one
    (``rounds/<r>/search-state.json``), so a killed search continues where it stopped and, with the same seed,
    ends with the same spec.
    """

    title, files, label = "search-r{r}", ("rates.json", "search.json"), "Search"

    def run(self, run: Run, state: State) -> State:
        cfg, s = run.cfg, run.cfg.search
        goal = round_goal(cfg, self.r)
        if goal is None:  # ac compress checks this before the run directory (config.check_search)
            raise ConfigError(f"--search anneal needs a reduction goal ({goal_flags()})")
        objective, reduction = goal
        space = _space(run, state, objective)
        knobs = ProxySettings.from_config(s, cfg.train, lr=cfg.prune.finetune_lr, seed=cfg.run.seed)
        proxy = Proxy(state.model, space.masks, run.splits.train, run.splits.val, run.device, knobs,
                      criterion=distiller(run, state) or cross_entropy,
                      example=run.example if cfg.prune.compact else None)  # fmt: skip
        settings = AnnealSettings.from_config(s, seed=cfg.run.seed + self.r)
        start = cfg.prune.scheme if cfg.prune.scheme in SEARCH_SCHEMES else DEFAULT_SCHEME
        annealer = Annealer(space, proxy, reduction, settings, [start] * len(space.units))
        self._resume(run, annealer)
        with _search_progress() as bar:
            task = bar.add_task(f"search r{self.r}", total=_expected(settings), info="")
            while not distributed.broadcast(annealer.finished()):  # rank 0's clock decides a time budget
                p = annealer.step()
                _append_line(run.dir / "search.jsonl", {"round": self.r, **asdict(p)})
                atomic_write_text(json.dumps(annealer.state()) + "\n", self._state_file(run))
                bar.update(task, completed=p.index + 1, info=f"T {p.temperature:.3g}  best proxy "
                           f"{p.best_accuracy:.2%}  {objective} {p.point.ratio:.1f}x")  # fmt: skip
        assert annealer.best is not None
        best = annealer.best
        summary = SearchSummary(self.r, objective, round(reduction, 4), annealer.index, round(annealer.elapsed, 2),
                                round(proxy.per_minute, 2), asdict(best), [asdict(u) for u in space.units])
        console.print(f"search r{self.r}: {annealer.index} proposals, best proxy {best.accuracy:.2%} at "
                      f"{best.ratio:.1f}x {objective}")  # fmt: skip
        atomic_write_text(spec_to_json(annealer.spec(best)), self.products(run)[0])
        write_record(summary, self.products(run)[1])
        return self.finish(run, state)

    def _state_file(self, run: Run) -> Path:
        return round_dir(run, self.r) / "search-state.json"

    def _resume(self, run: Run, annealer: Annealer) -> None:
        """Load the saved state, if any, and drop log lines of this round written after it."""
        saved = json.loads(self._state_file(run).read_text()) if self._state_file(run).is_file() else None
        if saved is not None:
            annealer.load_state(saved)
            console.print(f"resuming the round {self.r} search after proposal {saved['index']}")
        last = saved["index"] if saved is not None else -1
        log = run.dir / "search.jsonl"
        if log.is_file():
            lines = [x for x in log.read_text().splitlines() if x.strip()]
            keep = [x for x in lines if not (json.loads(x)["round"] == self.r and json.loads(x)["index"] > last)]
            atomic_write_text("".join(x + "\n" for x in keep), log)

    def restore(self, run: Run, state: State) -> State:
        state.rounds.append(RoundRecord(self.r, load_spec(self.products(run)[0])))
        state.current().search = read_record(SearchSummary, self.products(run)[1])
        return state


def _expected(s: AnnealSettings) -> int:
    """Proposals the schedule makes (the start included), for the progress bar."""
    steps = math.ceil(math.log(s.t_stop / s.t0) / math.log(s.cooling)) if s.t0 > s.t_stop else 0
    return 1 + (min(steps, s.proposals) if s.proposals else steps)


def _search_progress() -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn())  # fmt: skip
    return Progress(*columns, console=console, transient=True, disable=not distributed.is_main())


def _append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync it (the log of a search that may be killed at any moment); rank 0 only."""
    if not distributed.is_main():
        return
    with path.open("a") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


class AdmmStage(RoundStage):
    """ADMM iterations on the round's spec; the model and the ADMM state land in ``rounds/<r>/admm.pt``."""

    title, files, label = "admm-r{r}", ("admm.pt",), "ADMM"

    def run(self, run: Run, state: State) -> State:
        a = run.cfg.admm
        settings = AdmmSettings.from_config(a)
        model = state.model.to(run.device)
        admm = Admm(model_graph(run, model), state.current().spec, settings, lambda m: val_accuracy(run, m))
        keep = [MaskController(state.masks)] if state.masks else []  # earlier rounds' structures stay pruned
        epochs = a.iterations * a.epochs_per_iteration
        self.train(run, state, fit_settings(run, epochs, a.lr), [admm, *keep])
        atomic_save({"model": model.state_dict(), "admm": admm.state()}, self.products(run)[0])
        return self.finish(run, state)

    def restore(self, run: Run, state: State) -> State:
        saved = safe_load(self.products(run)[0])
        state.model.load_state_dict(saved["model"])
        state.current().admm = [from_record(AdmmIteration, e) for e in saved["admm"]["log"]]
        self.restore_distill(run, state)
        return state


class Retrain(RoundStage):
    """Hard prune ``W <- Pi_S(W)``, save the masks, retrain with them fixed."""

    title, files, label = "retrain-r{r}", ("masks.pt", "retrained.pt"), "Hard prune + retrain"

    def run(self, run: Run, state: State) -> State:
        masks_file = self.products(run)[0]
        model = state.model.to(run.device)
        if not masks_file.is_file():
            rates, schemes = rates_and_schemes(state.current().spec)
            masks, plan = project(model_graph(run, model), rates, schemes, {})
            masks = combine(masks, state.masks)  # earlier rounds' structures stay pruned
            atomic_save({"masks": masks, "layers": [vars(e) for e in plan.layers]}, masks_file)
        distributed.barrier(self.name)  # rank 0's masks file is there before anyone reads it
        masks = safe_load(masks_file)["masks"]
        apply_masks(model, masks)
        p = run.cfg.prune
        self.train_masked(run, state, fit_settings(run, p.finetune_epochs, p.finetune_lr), masks)
        atomic_save(model.state_dict(), self.products(run)[1])
        return self.finish(run, state)

    def restore(self, run: Run, state: State) -> State:
        saved = safe_load(self.products(run)[0])
        state.model.load_state_dict(safe_load(self.products(run)[1]))
        state.masks, state.current().layers = saved["masks"], [LayerPlan(**e) for e in saved["layers"]]
        self.restore_distill(run, state)
        return state


class Purify(RoundStage):
    """Dead structure (exact), then redundant structure within ``purify.tolerance`` points, judged by
    ``purify.criterion`` on the validation split's per-image correctness."""

    title, files, label = "purify-r{r}", ("purified.pt", "purified.json"), "Purify"

    def run(self, run: Run, state: State) -> State:
        model = state.model.to(run.device)
        graph = model_graph(run, model)
        masks, dead = purify_dead(graph, state.masks or {})
        apply_masks(model, masks)
        masks, redundant = self._redundant(run, model, masks)
        atomic_save({"model": model.state_dict(), "masks": masks}, self.products(run)[0])
        write_record(Purification(dead, redundant), self.products(run)[1])
        return self.finish(run, state)

    def _redundant(self, run: Run, model: nn.Module, masks: Masks) -> tuple[Masks, RedundantReport]:
        """Redundant-structure removal; with ``prune.compact`` on the shrunk model (dead structure is gone
        already, so it has the same candidates), written back."""
        if not run.cfg.prune.compact:
            return _remove_redundant(run, model, masks)
        small = shrunk(run, model, masks)
        kept, redundant = _remove_redundant(run, small.model, small.cut(masks))
        small.expand_into(model)
        masks = small.expand_masks(model, masks, kept)
        apply_masks(model, masks)
        return masks, redundant

    def restore(self, run: Run, state: State) -> State:
        saved = safe_load(self.products(run)[0])
        state.model.load_state_dict(saved["model"])
        state.masks = saved["masks"]
        state.current().purification = read_record(Purification, self.products(run)[1])
        return state


def _remove_redundant(run: Run, model: nn.Module, masks: Masks) -> tuple[Masks, RedundantReport]:
    """:func:`purify_redundant` judged by ``purify.criterion`` on the validation split's per-image correctness,
    with BN statistics re-estimated on ``purify.bn_batches`` training batches after each removal."""
    p = run.cfg.purify
    loader = make_loader(run.splits.train, run.cfg.train.batch_size, shuffle=True, seed=run.cfg.run.seed)

    def recalibrate(m: nn.Module) -> None:
        recalibrate_bn(m, loader, run.device, p.bn_batches)

    val = make_loader(run.splits.val, 256, shuffle=False)  # the same images, in the same order, every call

    def score(m: nn.Module) -> torch.Tensor:
        return correct_per_image(m, val, run.device)

    return purify_redundant(model, model_graph(run, model), masks, score, recalibrate, p.tolerance,
                            max_steps=p.max_steps, criterion=p.criterion)  # fmt: skip
