"""The HuggingFace callback on real ``Trainer.train`` runs of a tiny CPU model whose LR schedule
jumps 400x mid-run: ``stop`` stops within one check interval of the divergence's onset (after the
Trainer saved its checkpoint), ``rollback`` ends with a finite loss and the logs show it, and a
healthy run is left alone."""

from __future__ import annotations

import json
import logging
import math
import os

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from lrdoctor.api import diagnose  # noqa: E402
from lrdoctor.integrations.hf import LRDoctorCallback  # noqa: E402

JUMP_AT = 60
STEPS = 150
CHECK = 10


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))

    def forward(self, x, labels=None):
        out = self.net(x)
        return {"loss": torch.nn.functional.mse_loss(out, labels), "logits": out}


class Data(torch.utils.data.Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(2048, 8, generator=g)
        self.y = self.x @ torch.randn(8, 1, generator=g) + 0.1 * torch.randn(2048, 1, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


def _train(tmp_path, jump, cb):
    torch.manual_seed(0)
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 if s < JUMP_AT else jump)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=STEPS, per_device_train_batch_size=16, logging_steps=1,
        logging_nan_inf_filter=False, max_grad_norm=1e6, save_strategy="no", report_to=[], use_cpu=True,
        disable_tqdm=True, remove_unused_columns=False, seed=0)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Data(), optimizers=(opt, sched),
                                   callbacks=[cb])
    trainer.remove_callback(transformers.trainer_callback.PrinterCallback)  # no log dicts on stdout
    trainer.train()
    trainer.save_state()  # trainer_state.json: the log lrdoctor diagnose reads
    return trainer


def _records(tmp_path):
    with open(tmp_path / "out" / "lrdoctor-findings.jsonl") as fh:
        return [json.loads(line) for line in fh]


def _last_loss(trainer):
    return [h["loss"] for h in trainer.state.log_history if "loss" in h][-1]


@pytest.fixture(autouse=True)
def _quiet(torch_one_thread):
    transformers.logging.set_verbosity_error()
    logging.getLogger("lrdoctor").setLevel(logging.ERROR)


def test_stop_within_one_check_interval_of_the_onset(tmp_path):
    trainer = _train(tmp_path, 400.0, LRDoctorCallback("stop", check_every=CHECK))
    finding, stop = _records(tmp_path)
    assert finding["rule"] == "divergence" and stop["event"] == "stop"
    assert JUMP_AT <= finding["start_step"] <= JUMP_AT + CHECK
    assert trainer.state.global_step <= finding["start_step"] + CHECK < STEPS
    assert os.path.isdir(stop["checkpoint"])  # the Trainer's own checkpoint, saved before stopping
    d = diagnose(tmp_path / "out")[0]
    assert any(f.rule == "divergence" for f in d.findings)
    assert any(a.kind == "live_stop" and "stopped at step" in a.message for a in d.run.annotations)


def test_rollback_ends_finite_and_the_logs_show_it(tmp_path):
    trainer = _train(tmp_path, 400.0, LRDoctorCallback("rollback", check_every=CHECK, checkpoint_every=10))
    recs = _records(tmp_path)
    rollbacks = [r for r in recs if r["event"] == "rollback"]
    assert rollbacks and not any(r["event"] == "stop" for r in recs)
    for rb in rollbacks:
        assert rb["to_step"] < rb["start_step"] - 1 and rb["patch"]["lr_scale"] < 1
    assert trainer.state.global_step == STEPS and math.isfinite(_last_loss(trainer))
    d = diagnose(tmp_path / "out")[0]
    notes = [a for a in d.run.annotations if a.kind == "live_rollback"]
    assert len(notes) == len(rollbacks) and "rolled back" in notes[0].message


def test_a_healthy_run_is_never_stopped(tmp_path):
    trainer = _train(tmp_path, 1.0, LRDoctorCallback("stop", check_every=CHECK))
    assert trainer.state.global_step == STEPS and math.isfinite(_last_loss(trainer))
    assert not (tmp_path / "out" / "lrdoctor-findings.jsonl").exists()
