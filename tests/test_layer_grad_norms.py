"""Per-layer gradient norms (issue 15, kind 10) on real Lightning ``Trainer.fit`` runs of tiny CPU
models that log ``self.log_dict(grad_norm(self, norm_type=2))`` in ``on_before_optimizer_step``,
written by Lightning's own TensorBoard and CSV loggers (the CSV logger sorts its columns, the
TensorBoard one keeps the logged order: both must give the same layers).

- a deep sigmoid MLP with a small init: the early layers' gradients are ~1e-6 of the last
  layer's while the total norm (the last layer's) is ordinary, so the total-norm test (a norm
  below 0.05, or a collapse) cannot see it;
- a healthy ReLU MLP: no finding;
- a net whose first layer bursts: an input feature that is 0 except in one batch, where it is
  1e3, with its weights starting at 0 (the forward pass, hence the loss, is unchanged at the
  burst; the first layer's gradient is 1e3x larger): exploding-gradients names that layer.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
L = pytest.importorskip("lightning")

from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger  # noqa: E402
from lightning.pytorch.utilities import grad_norm  # noqa: E402

from lrdoctor.api import diagnose  # noqa: E402
from lrdoctor.roles import RoleView, family_tags  # noqa: E402

STEPS = 100
BATCH = 16
BURST_BATCHES = (45,)


class LayerNormsLogged(L.LightningModule):
    def __init__(self, net: torch.nn.Module, lr: float):
        super().__init__()
        self.net = net
        self.lr = lr

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def on_before_optimizer_step(self, optimizer):
        self.log_dict(grad_norm(self, norm_type=2))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def _mlp(widths: list[int], act: type[torch.nn.Module], init_std: float | None) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        lin = torch.nn.Linear(a, b)
        if init_std is not None:
            torch.nn.init.normal_(lin.weight, std=init_std)
            torch.nn.init.zeros_(lin.bias)
        layers.append(lin)
        if i < len(widths) - 2:
            layers.append(act())
    return torch.nn.Sequential(*layers)


def _fit(root: Path, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float) -> dict[str, Path]:
    loggers = [TensorBoardLogger(str(root), name="tb"), CSVLogger(str(root), name="csv")]
    trainer = L.Trainer(max_steps=STEPS, logger=loggers, log_every_n_steps=1, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, accelerator="cpu", devices=1)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH, shuffle=False)
    trainer.fit(LayerNormsLogged(net, lr), data)
    return {"tensorboard": Path(loggers[0].log_dir), "csv": Path(loggers[1].log_dir)}


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[str, dict[str, Path]]:
    root = tmp_path_factory.mktemp("layer_grad_norms")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(STEPS * BATCH, 8, generator=g)
    out = {}

    # vanishing: 6 sigmoid layers, weights N(0, 0.05): each layer shrinks the gradient ~15x;
    # noisy targets around 2 keep the last layer's gradient (and so the total) ordinary
    torch.manual_seed(0)
    y = 2.0 + torch.randn(len(x), 1, generator=g)
    out["vanishing"] = _fit(root / "vanishing", _mlp([8] * 6 + [1], torch.nn.Sigmoid, 0.05), x, y, 0.05)

    # healthy: 4 ReLU layers, PyTorch's default init, a learnable linear target
    torch.manual_seed(0)
    y = x @ torch.randn(8, 1, generator=g)
    out["healthy"] = _fit(root / "healthy", _mlp([8, 16, 16, 16, 1], torch.nn.ReLU, None), x, y, 0.02)

    # exploding first layer: feature 7 is 0 except in one batch; its weights start at 0
    torch.manual_seed(0)
    xb = x.clone()
    xb[:, 7] = 0.0
    for b in BURST_BATCHES:
        xb[b * BATCH:(b + 1) * BATCH, 7] = 1e3
    y = xb[:, :7] @ torch.randn(7, 1, generator=g)
    net = _mlp([8, 16, 16, 16, 1], torch.nn.ReLU, None)
    with torch.no_grad():
        net[0].weight[:, 7] = 0.0
    out["exploding"] = _fit(root / "exploding", net, xb, y, 0.01)
    return out


def _findings(path: Path) -> dict:
    (d,) = diagnose(path)
    return {f.rule: f for f in d.findings}


@pytest.mark.parametrize("writer", ["tensorboard", "csv"])
def test_early_layers_vanish_while_the_total_norm_looks_normal(runs, writer):
    found = _findings(runs["vanishing"][writer])
    assert "vanishing-gradients" in found, {r: f.message for r, f in found.items()}
    f = found["vanishing-gradients"]
    ev = f.evidence
    assert ev["kind"] == "layers"
    # 6 layers: the first and last quarter (rounded) are two each
    assert ev["early_layers"] == ["net.0", "net.2"] and ev["late_layers"] == ["net.8", "net.10"]
    assert ev["layer_ratio"] < 1e-3
    # the first layers vanish, the last one does not; named in model order (the CSV logger
    # sorted its columns: net.10 before net.2, undone by the natural order)
    assert ev["vanishing_layers"][:2] == ["net.0", "net.2"] and "net.10" not in ev["vanishing_layers"]
    assert ev["layer_order"] == ("natural" if writer == "csv" else "logged")
    assert "net.0" in f.message
    # what the total-norm test saw: a norm far above its 0.05 threshold (and no collapse)
    assert ev["total_norm"] > 0.3


@pytest.mark.parametrize("writer", ["tensorboard", "csv"])
def test_healthy_net_with_layer_norms_has_no_gradient_finding(runs, writer):
    found = _findings(runs["healthy"][writer])
    assert not {"vanishing-gradients", "exploding-gradients"} & set(found), {r: f.message for r, f in found.items()}


@pytest.mark.parametrize("writer", ["tensorboard", "csv"])
def test_exploding_gradients_names_the_layer_that_burst(runs, writer):
    found = _findings(runs["exploding"][writer])
    assert "exploding-gradients" in found, {r: f.message for r, f in found.items()}
    f = found["exploding-gradients"]
    # Lightning counts optimizer steps from 0: batch b is step b
    assert f.evidence["first_layers"] == ["net.0"]
    assert f.evidence["layer_onset_step"] == BURST_BATCHES[0] == f.start_step
    assert f.evidence["layer_ratios"]["net.0"] >= 10
    assert "began in net.0" in f.message


def test_layer_tags_are_a_family_and_never_the_total_grad_norm(runs):
    (run,) = [d.run for d in diagnose(runs["healthy"]["tensorboard"])]
    view = RoleView.of(run)
    assert view.roles["grad_norm"] == "grad_2.0_norm_total"
    fam = view.family("layer_grad_norm")
    assert fam is not None and fam.names[:2] == ("net.0.weight", "net.0.bias") and len(fam) == 8
    # without the total, the grad_norm pattern must not pick one layer's norm
    no_total = replace(run, scalars=run.scalars[run.scalars["tag"] != "grad_2.0_norm_total"])
    assert "grad_norm" not in RoleView.of(no_total).roles


def test_family_patterns():
    tags = ["grad_2.0_norm/enc.0.weight", "grad_inf_norm/enc.0.weight", "grad_2.0_norm/enc.1.weight",
            "grad_inf_norm/enc.1.weight", "grad_2.0_norm_total", "grad_norm/total", "train/loss"]
    assert family_tags("layer_grad_norm", tags) == (("grad_2.0_norm/enc.0.weight", "grad_2.0_norm/enc.1.weight"),
                                                    ("enc.0.weight", "enc.1.weight"))
    assert family_tags("layer_grad_norm", ["grads/fc1/norm", "grads/fc2/norm", "grad_norm"])[1] == ("fc1", "fc2")
    assert family_tags("layer_grad_norm", ["grad_norm/total", "grad_norm_before_clip"]) == ((), ())


def test_proposals_follow_the_layers(runs):
    # exploding: the global clip (from the total) names the layer and the call that clips it alone
    f = _findings(runs["exploding"]["tensorboard"])["exploding-gradients"]
    clip = next(p for p in f.proposals if p.kind == "clip_grad_norm")
    assert "began in net.0" in clip.rationale and "get_submodule('net.0')" in clip.rationale
    assert set(clip.config.to_dict()) == {"clip_grad_norm"}  # the per-layer call is described, not patched
    # vanishing with a stalled loss: a larger LR, said to leave the early layers as far behind
    f = _findings(runs["vanishing"]["tensorboard"])["vanishing-gradients"]
    assert f.evidence["loss_stalled"]
    (p,) = f.proposals
    assert p.kind == "raise_lr" and "early layers' gradients were" in p.rationale


def test_no_lr_raise_while_the_loss_still_falls():
    # the per-layer finding on a run whose loss falls (the last layers learn): no LR change helps
    import numpy as np
    import pandas as pd

    from lrdoctor.model import Run, make_scalars

    t = np.arange(300)
    rng = np.random.default_rng(0)
    parts = [make_scalars("train_loss", t, None, 2.0 * np.exp(-t / 100) + 0.2),
             make_scalars("grad_2.0_norm_total", t, None, 0.5 * np.exp(0.1 * rng.standard_normal(300)))]
    parts += [make_scalars(f"grad_2.0_norm/net.{i}.weight", t, None, 0.5 * 10.0 ** (-0.6 * (7 - i)) + 0 * t)
              for i in range(8)]
    run = Run(name="r", source="r", format="test", scalars=pd.concat(parts, ignore_index=True))
    (d,) = diagnose([run])
    f = {f.rule: f for f in d.findings}["vanishing-gradients"]
    assert not f.evidence["loss_stalled"] and f.proposals == () and f.proposal_errors == ()


@pytest.mark.parametrize("name", ["vanishing", "exploding"])
def test_live_engine_ends_with_the_offline_answer(runs, name):
    from lrdoctor.live.engine import LiveEngine

    (d,) = diagnose(runs[name]["tensorboard"])
    eng = LiveEngine(proposals=False)
    sc = d.run.scalars
    for tag, rows in sc.groupby("tag", sort=False):
        eng.extend(str(tag), rows["step"].to_numpy(), rows["value"].to_numpy())
    eng.finish()
    live = {r: f.evidence for r, f in eng.current.items()}
    assert live == {f.rule: f.evidence for f in d.findings}
