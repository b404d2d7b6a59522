"""The Lightning callback on real ``Trainer.fit`` runs of a tiny CPU model whose LR schedule
jumps 400x mid-run: ``stop`` stops within one check interval of the divergence's onset,
``rollback`` ends with a finite loss and the logs say where and why, a healthy run is left alone."""

from __future__ import annotations

import json
import logging
import math

import pytest

torch = pytest.importorskip("torch")
L = pytest.importorskip("lightning")

from lrdoctor.api import diagnose  # noqa: E402
from lrdoctor.integrations.lightning import LRDoctorCallback  # noqa: E402

JUMP_AT = 60
STEPS = 150
CHECK = 10


class Tiny(L.LightningModule):
    def __init__(self, jump: float):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
        self.jump = jump
        self.last_loss = math.nan

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        self.last_loss = float(loss.detach())
        return loss

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.05)
        jump = self.jump
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 if s < JUMP_AT else jump)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 8, generator=g)
    y = x @ torch.randn(8, 1, generator=g) + 0.1 * torch.randn(2048, 1, generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=True,
                                       generator=g)


def _fit(tmp_path, jump, cb):
    torch.manual_seed(0)
    model = Tiny(jump)
    trainer = L.Trainer(max_steps=STEPS, callbacks=[cb], logger=L.pytorch.loggers.CSVLogger(tmp_path),
                        log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, accelerator="cpu", devices=1)
    trainer.fit(model, _data())
    return trainer, model


def _records(trainer):
    path = trainer.log_dir + "/lrdoctor-findings.jsonl"
    with open(path) as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(autouse=True)
def _quiet(torch_one_thread):
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)


def test_stop_within_one_check_interval_of_the_onset(tmp_path):
    trainer, _ = _fit(tmp_path, 400.0, LRDoctorCallback("stop", check_every=CHECK))
    finding, stop = _records(trainer)
    assert finding["rule"] == "divergence" and stop["event"] == "stop"
    assert JUMP_AT <= finding["start_step"] <= JUMP_AT + CHECK
    assert trainer.global_step <= finding["start_step"] + CHECK  # stopped at the first check after it
    assert trainer.global_step < STEPS
    assert (tmp_path / "lightning_logs" / "version_0" / "checkpoints").exists() or stop["checkpoint"]
    import os

    assert os.path.isfile(stop["checkpoint"])
    d = diagnose(trainer.log_dir)[0]
    assert any(a.kind == "live_stop" for a in d.run.annotations)


def test_rollback_ends_finite_and_the_logs_show_it(tmp_path):
    trainer, model = _fit(tmp_path, 400.0, LRDoctorCallback("rollback", check_every=CHECK, checkpoint_every=10))
    recs = _records(trainer)
    rollbacks = [r for r in recs if r["event"] == "rollback"]
    assert rollbacks and not any(r["event"] == "stop" for r in recs)
    for rb in rollbacks:  # each restores a snapshot from before the onset and lowers the LR curve
        assert rb["to_step"] < rb["start_step"] - 1 and rb["patch"]["lr_scale"] < 1
    assert trainer.global_step == STEPS and math.isfinite(model.last_loss)
    d = diagnose(trainer.log_dir)[0]
    notes = [a for a in d.run.annotations if a.kind == "live_rollback"]
    assert notes and f"step {rollbacks[0]['at_step']}" == notes[0].location and "rolled back" in notes[0].message


def test_a_healthy_run_is_never_stopped(tmp_path):
    trainer, model = _fit(tmp_path, 1.0, LRDoctorCallback("stop", check_every=CHECK))
    assert trainer.global_step == STEPS and math.isfinite(model.last_loss)
    import os

    assert not os.path.exists(trainer.log_dir + "/lrdoctor-findings.jsonl")


class _PreClipNorms(L.Callback):
    """The total grad norm before clipping, measured independently (torch's own function)."""

    def __init__(self):
        self.norms = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self.norms.append(float(torch.nn.utils.get_total_norm(grads)))


class _NoClipping(Tiny):
    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        pass  # clipping switched off by the module: no norm comes from Lightning's clipping


@pytest.mark.parametrize("clip, module", [(None, Tiny), (0.05, Tiny), (0.05, _NoClipping)],
                         ids=["no clipping", "clipping by norm", "custom configure_gradient_clipping"])
def test_the_grad_norm_fed_is_the_one_before_clipping(tmp_path, clip, module):
    torch.manual_seed(0)
    cb, ref = LRDoctorCallback("warn", check_every=CHECK), _PreClipNorms()
    trainer = L.Trainer(max_steps=20, callbacks=[ref, cb], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, accelerator="cpu", devices=1,
                        gradient_clip_val=clip, default_root_dir=tmp_path)
    plugin_class_method = type(trainer.precision_plugin).clip_grad_by_norm
    trainer.fit(module(1.0), _data())
    fed = cb.guard.engine._buffers["grad_norm"]
    assert fed.n == 20  # one per step, whether it came from clipping or was measured
    assert fed.arrays()[1] == pytest.approx(ref.norms, rel=1e-5)
    if clip is not None:
        assert max(ref.norms) > clip  # the clipping did cut: the norm fed is the one before it
    # the plugin has its own method back after the fit
    assert "clip_grad_by_norm" not in vars(trainer.precision_plugin)
    assert type(trainer.precision_plugin).clip_grad_by_norm is plugin_class_method
