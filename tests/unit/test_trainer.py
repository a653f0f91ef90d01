import os
from pathlib import Path

import pytest
import torch
from torch import nn

from kdgen.data import TensorImageDataset
from kdgen.errors import KdgenError
from kdgen.io import atomic_torch_save, verify_checksum
from kdgen.methods.base import DistillationMethod, StepOutput
from kdgen.train import STATE_FILE, Trainer


class Regress(DistillationMethod):
    """Fit a linear map; after `nan_after` calls the loss turns NaN (a run that blows up)."""

    def __init__(self, nan_after: int | None = None):
        super().__init__()
        self.student = nn.Linear(4, 1)
        self.nan_after, self.calls = nan_after, 0

    def trainable(self, phase):
        return self.student.parameters()

    def forward(self, batch, phase):
        self.calls += 1
        x = batch["image"].flatten(1)
        loss = (self.student(x).squeeze(1) - x.sum(1)).pow(2).mean()
        if self.nan_after is not None and self.calls > self.nan_after:
            loss = loss * float("nan")
        return StepOutput(loss, {"loss/mse": loss.item()})


def _data():
    return TensorImageDataset(torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(0)))


def _trainer(method, out, steps):
    return Trainer(method, _data(), out_dir=out, steps=steps, lr=0.05, batch_size=8, ema=0.9, checkpoint_every=2, log_every=1, sample_every=100)


def test_loss_falls_and_tensorboard_is_written(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = _trainer(Regress(), tmp_path, 40).fit()
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    values = [e.value for e in acc.Scalars("loss/mse")]
    assert len(values) == 40 and values[-1] < 0.1 * values[0]
    assert result.step == 40 and (tmp_path / STATE_FILE).is_file()


def test_nan_loss_stops_with_a_sentence_and_keeps_last_checkpoint(tmp_path):
    with pytest.raises(KdgenError, match=r"loss became nan at step 6 .*last good checkpoint \(step 4\)"):
        _trainer(Regress(nan_after=5), tmp_path, 20).fit()
    state = torch.load(tmp_path / STATE_FILE, weights_only=True)
    assert state["step"] == 4 and all(torch.isfinite(v).all() for v in state["method"].values())


def test_nan_loss_before_the_first_checkpoint_names_none(tmp_path):
    with pytest.raises(KdgenError, match=r"loss became nan at step 1 .*no checkpoint was written yet \(the first comes at step 2\)"):
        _trainer(Regress(nan_after=0), tmp_path, 20).fit()
    assert not (tmp_path / STATE_FILE).exists()


def test_resume_continues_from_the_saved_step(tmp_path):
    _trainer(Regress(), tmp_path, 6).fit()
    saved = torch.load(tmp_path / STATE_FILE, weights_only=True)
    method = Regress()
    trainer = _trainer(method, tmp_path, 10)
    result = trainer.fit(resume=True)
    assert result.resumed_from == 6 and result.step == 10 and method.calls == 4
    assert torch.load(tmp_path / STATE_FILE, weights_only=True)["step"] == 10
    assert saved["step"] == 6


def test_resume_without_checkpoint_is_a_sentence(tmp_path):
    with pytest.raises(KdgenError, match="no checkpoint"):
        _trainer(Regress(), tmp_path, 4).fit(resume=True)


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "state" / "last.pt"
    atomic_torch_save({"step": 1}, path)

    real = os.replace

    def crash(src, dst):  # the checkpoint's rename fails; other renames (its restored sha256) go through
        if Path(dst) == path:
            raise OSError("disk full")
        real(src, dst)

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        atomic_torch_save({"step": 2}, path)
    assert torch.load(path, weights_only=True)["step"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt", "last.pt.sha256"]  # no temp file left
    verify_checksum(path)  # the old checkpoint still matches its recorded sha256


def test_ema_warms_up_then_averages():
    from kdgen.train import EMA

    live = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        live.weight.fill_(0.0)
    ema = EMA(live, decay=0.999)
    with torch.no_grad():
        live.weight.fill_(1.0)
    for _ in range(200):
        ema.update(live)
    # a flat 0.999 would still hold 0.999**200 = 82% of the start; the warm-up forgets it
    assert ema.module.weight.item() > 0.9
    assert ema.updates == 200


class Recorder(Regress):
    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, batch, phase):
        self.seen.append(round(batch["image"].sum().item(), 4))
        return super().forward(batch, phase)


def test_resumed_run_sees_the_same_batches_as_an_uninterrupted_one(tmp_path):
    straight = Recorder()
    _trainer(straight, tmp_path / "a", 12).fit()  # 8 batches per epoch: crosses into epoch 1
    first, second = Recorder(), Recorder()
    _trainer(first, tmp_path / "b", 6).fit()
    _trainer(second, tmp_path / "b", 12).fit(resume=True)
    assert first.seen + second.seen == straight.seen
    assert straight.seen[:8] != straight.seen[8:12] + straight.seen[:4]  # epochs are shuffled differently


def test_cosine_schedule_follows_the_step_and_survives_resume(tmp_path):
    seen = []

    class Record(Regress):
        def forward(self, batch, phase):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])
            return super().forward(batch, phase)

    def make(out, steps):
        return Trainer(Record(), _data(), out_dir=out, steps=steps, lr=0.05, batch_size=8, ema=0, checkpoint_every=2, log_every=1,
                       sample_every=100, lr_schedule="cosine")

    trainer = make(tmp_path / "a", 6)
    trainer.fit()
    whole = list(seen)
    assert whole[0] == pytest.approx(0.05) and whole == sorted(whole, reverse=True) and whole[-1] < 0.01
    assert whole[3] == pytest.approx(0.05 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 3 / 6)).item()))
    seen.clear()
    trainer = make(tmp_path / "b", 4)
    trainer.fit()
    seen.clear()
    trainer = make(tmp_path / "b", 6)  # resumed at step 4 of a 6-step run: the rest of the same curve
    trainer.fit(resume=True)
    assert seen == pytest.approx(whole[4:])


def test_the_data_position_is_an_epoch_and_images_into_it(tmp_path):
    """60 images at batch 8 x grad_accum 2: 7 batches an epoch (4 images dropped), so 6 steps end 40 images into epoch 1.
    Resumed at batch 20, the run continues at that epoch's images 40-59, the batch an uninterrupted batch-20 run draws
    there - not at a count of images that would ignore each epoch's dropped remainder."""
    data = TensorImageDataset(torch.randn(60, 1, 2, 2, generator=torch.Generator().manual_seed(0)))
    first = Trainer(Regress(), data, out_dir=tmp_path, steps=6, lr=0.05, batch_size=8, grad_accum=2, checkpoint_every=6, sample_every=100)
    first.fit()
    assert torch.load(tmp_path / STATE_FILE, weights_only=True)["data_position"] == [1, 40]
    again = Trainer(Regress(), data, out_dir=tmp_path, steps=7, lr=0.05, batch_size=20, checkpoint_every=6, sample_every=100)
    again.load_state()
    resumed = next(again._batches(*again._position))["image"]
    fresh = Trainer(Regress(), data, out_dir=tmp_path / "f", steps=6, lr=0.05, batch_size=20, sample_every=100)
    seq = fresh._batches(0, 0)
    want = [next(seq)["image"] for _ in range(6)][5]  # epoch 0: three batches; epoch 1: the third is images 40-59
    assert torch.equal(resumed, want)
