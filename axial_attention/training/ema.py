"""An exponential moving average of a model's weights: the model a run evaluates, samples and saves.

Averaging the weights of the last few hundred steps removes most of the step-to-step noise of
stochastic training at no cost in steps; for likelihood models it usually lowers test loss (Polyak
and Juditsky 1992; used for the Axial Transformer's and most image models' reported results).
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class ExponentialMovingAverage:
    """`average` is a copy of `model` in eval mode whose parameters follow
    avg <- avg + (1 - d_t) (param - avg) after each optimiser step, with d_t = min(decay, (1 + t) / (10 + t)):
    the warm-up keeps the average from remembering the random initialisation for `1 / (1 - decay)` steps.
    Buffers are copied as they are."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"--ema-decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.average = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(list(self.average.parameters()), params, 1.0 - decay)
        for avg, buf in zip(self.average.buffers(), model.buffers()):
            avg.copy_(buf)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "average": self.average.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.updates = state["decay"], state["updates"]
        self.average.load_state_dict(state["average"])
