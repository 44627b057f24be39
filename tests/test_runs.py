"""Run directories, atomic checkpoints, safe loading and resume."""

import os
from pathlib import Path
from unittest import mock

import pytest
import torch

from ac_toolchain import runs
from ac_toolchain.errors import CheckpointError

STAMP = "20260101-120000"


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run directory made in this test gets the same second, so the collision branch always runs."""
    monkeypatch.setattr(runs.time, "strftime", lambda fmt: STAMP)


def test_new_run_dirs_in_the_same_second_never_collide(tmp_path: Path, frozen_clock: None) -> None:
    a = runs.new_run_dir(tmp_path, "resnet18", "arm64")
    (a / "mine.txt").write_text("run a")
    b = runs.new_run_dir(tmp_path, "resnet18", "arm64")
    (tmp_path / f"resnet18-arm64-{STAMP}-2").mkdir()  # someone else's folder: skipped, not reused
    c = runs.new_run_dir(tmp_path, "resnet18", "arm64")
    assert [d.name for d in (a, b, c)] == [f"resnet18-arm64-{STAMP}", f"resnet18-arm64-{STAMP}-1",
                                           f"resnet18-arm64-{STAMP}-3"]  # fmt: skip
    assert all(d.parent == tmp_path for d in (a, b, c))
    assert sorted(p.name for p in a.iterdir()) == ["checkpoints", "mine.txt"]  # the first run's files untouched
    assert [p.name for p in b.iterdir()] == ["checkpoints"] == [p.name for p in c.iterdir()]
    assert not any((tmp_path / f"resnet18-arm64-{STAMP}-2").iterdir())


def test_user_model_spec_gives_a_clean_run_name(tmp_path: Path, frozen_clock: None) -> None:
    d = runs.new_run_dir(tmp_path, "some dir/my net.py:Build", "x86")
    assert d == tmp_path / f"my_net-x86-{STAMP}" and (d / "checkpoints").is_dir()
    assert runs.new_run_dir(tmp_path, "vgg16", "x86").name == f"vgg16-x86-{STAMP}"


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    runs.atomic_save({"w": torch.ones(3)}, path)
    with mock.patch("torch.save", side_effect=OSError("disk full")), pytest.raises(OSError):
        runs.atomic_save({"w": torch.zeros(3)}, path)
    assert torch.equal(runs.safe_load(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind


def test_checkpoints_keep_only_the_newest_and_resume_reads_it(tmp_path: Path) -> None:
    run = runs.new_run_dir(tmp_path, "m", "x86")
    for epoch in (1, 2, 3):
        runs.save_checkpoint(run, "dense", epoch, {"model": {"w": torch.full((2,), float(epoch))}})
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["dense-0003.pt"]
    latest = runs.latest_checkpoint(run, "dense")
    assert latest is not None and latest["epoch"] == 3 and latest["model"]["w"][0] == 3
    assert runs.latest_checkpoint(run, "finetune") is None


def test_corrupt_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "dense.pt"
    runs.atomic_save({"w": torch.ones(100)}, path)
    os.truncate(path, 50)
    with pytest.raises(CheckpointError, match=r"cannot be read.*corrupt"):
        runs.safe_load(path)
    with pytest.raises(CheckpointError, match="not found"):
        runs.safe_load(tmp_path / "missing.pt")


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"f": os.getcwd}, path)  # a function, not weights
    with pytest.raises(CheckpointError, match="cannot be read"):
        runs.safe_load(path)


def test_state_dict_of_another_model_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    runs.atomic_save(torch.nn.Linear(3, 4).state_dict(), path)
    with pytest.raises(CheckpointError, match="does not match this model"):
        runs.load_state_dict(torch.nn.Linear(5, 4), path)


def test_round_numbered_stages_keep_their_own_checkpoints(tmp_path: Path) -> None:
    run = runs.new_run_dir(tmp_path, "m", "x86")
    runs.save_checkpoint(run, "admm-r2", 3, {"v": 23})
    runs.save_checkpoint(run, "admm-r1", 4, {"v": 14})
    runs.save_checkpoint(run, "admm", 1, {"v": 1})  # its clean-up glob admm-*.pt must spare admm-r1 / admm-r2
    runs.save_checkpoint(run, "admm-r2", 5, {"v": 25})
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["admm-0001.pt", "admm-r1-0004.pt", "admm-r2-0005.pt"]
    assert [runs.latest_checkpoint(run, s)["v"] for s in ("admm", "admm-r1", "admm-r2")] == [1, 14, 25]  # type: ignore[index]


def test_checkpoint_refusing_code_says_what_to_do_not_what_torch_says(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"f": os.getcwd}, path)
    with pytest.raises(CheckpointError) as err:
        runs.safe_load(path)
    assert "weights_only=False" not in str(err.value) and "state dict" in str(err.value)
