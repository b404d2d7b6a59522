"""The five small models. ``cfg.model`` overrides their sizes (keys below, defaults in brackets).

- mlp_regressor: ReLU MLP, 16 -> width [64] x depth [2] -> 1, optional dropout [0].
- cnn_classifier: conv(c1 [8]) -> pool -> conv(c2 [16]) -> pool -> fc(hidden [64]) -> 4 classes.
- gru_lm: char embedding (emb [32]) -> recurrent cell (cell "gru" | "rnn" (tanh) | "rnn_relu" [gru], hidden [64],
  layers [1]) -> vocabulary; ``rec_gain`` [1.0] scales the recurrent weights at init.
- transformer_lm: causal pre-/post-LN encoder (d_model [32], nhead [2], layers [2], ff [64],
  norm_first [True]), learned positions.
- deep_sigmoid_mlp: sigmoid MLP, 16 -> width [32] x depth [12] -> 1 -> sigmoid, trained with MSE on
  0/1 targets (the classic set-up). ``init_gain`` [1.0] scales the initial weights: large gains
  saturate every unit, and the sigmoid's derivative (<= 1/4, ~0 when saturated) shrinks the
  gradient at every layer, output included.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def build_model(workload: str, n_in: int, n_out: int, spec: dict[str, Any]):
    if workload in ("mlp_regressor", "deep_sigmoid_mlp"):
        sigmoid = workload == "deep_sigmoid_mlp"
        width = int(spec.get("width", 32 if sigmoid else 64))
        depth = int(spec.get("depth", 12 if sigmoid else 2))
        act = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}[spec.get("act", "sigmoid" if sigmoid else "relu")]
        bias = bool(spec.get("bias", True))
        layers: list[nn.Module] = []
        d = n_in
        for _ in range(depth):
            layers += [nn.Linear(d, width, bias=bias), act()]
            if spec.get("dropout"):
                layers.append(nn.Dropout(float(spec["dropout"])))
            d = width
        layers.append(nn.Linear(d, n_out, bias=bias))
        if sigmoid:
            layers.append(nn.Sigmoid())  # old-school sigmoid output unit, trained with MSE on 0/1 targets
        gain = float(spec.get("init_gain", 1.0))
        if gain != 1.0:
            with torch.no_grad():
                for m in layers:
                    if isinstance(m, nn.Linear):
                        m.weight.mul_(gain)
        return nn.Sequential(*layers)

    if workload == "cnn_classifier":
        c1, c2, hidden = int(spec.get("c1", 8)), int(spec.get("c2", 16)), int(spec.get("hidden", 64))
        return nn.Sequential(
            nn.Conv2d(n_in, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(c2 * 9, hidden), nn.ReLU(), nn.Linear(hidden, n_out),
        )

    if workload == "gru_lm":
        return _RecurrentLM(n_in, spec)

    if workload == "transformer_lm":
        return _TransformerLM(n_in, spec)

    raise ValueError(workload)  # WorkloadConfig already validated the name


class _RecurrentLM(nn.Module):
    def __init__(self, vocab: int, spec: dict[str, Any]):
        super().__init__()
        emb, hidden = int(spec.get("emb", 32)), int(spec.get("hidden", 64))
        cell = spec.get("cell", "gru")
        layers = int(spec.get("layers", 1))
        self.emb = nn.Embedding(vocab, emb)
        if cell == "gru":
            self.rnn = nn.GRU(emb, hidden, num_layers=layers, batch_first=True)
        else:
            act = "relu" if cell == "rnn_relu" else "tanh"
            self.rnn = nn.RNN(emb, hidden, num_layers=layers, nonlinearity=act, batch_first=True)
        self.out = nn.Linear(hidden, vocab)
        gain = float(spec.get("rec_gain", 1.0))
        if gain != 1.0:
            with torch.no_grad():
                for name, p in self.rnn.named_parameters():
                    if name.startswith("weight_hh"):
                        p.mul_(gain)

    def forward(self, x):
        h, _ = self.rnn(self.emb(x))
        return self.out(h)


class _TransformerLM(nn.Module):
    def __init__(self, vocab: int, spec: dict[str, Any]):
        super().__init__()
        d = int(spec.get("d_model", 32))
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(128, d) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d, int(spec.get("nhead", 2)), int(spec.get("ff", 64)), dropout=float(spec.get("dropout", 0.0)),
            batch_first=True, norm_first=bool(spec.get("norm_first", True)),
        )
        self.enc = nn.TransformerEncoder(layer, int(spec.get("layers", 2)), enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, vocab)

    def forward(self, x):
        t = x.shape[1]
        mask = torch.triu(torch.full((t, t), float("-inf"), device=x.device), diagonal=1)
        h = self.enc(self.emb(x) + self.pos[:t], mask=mask, is_causal=True)
        return self.out(self.norm(h))
