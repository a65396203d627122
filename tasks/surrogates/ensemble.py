"""An ensemble of one-step surrogates: the predictive mean and spread of their rollouts.

Each member rolls out on its own (deep ensembles, Lakshminarayanan et al. 2017): the ensemble's
prediction at a time is the mean of the members' predictions at that time, and its spread their
standard deviation. Averaging inside the rollout (stepping the mean) would be another model.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pdeflow.tasks.surrogates.training import rollout


class Ensemble:
    """Members trained on the same data with different seeds, evaluated together.

    Args:
        members: ``OneStepSurrogate``-like models with the same history and fields.
    """

    def __init__(self, members: list[nn.Module]) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        histories = {int(getattr(m, "history", 1)) for m in members}
        if len(histories) != 1:
            raise ValueError(f"ensemble members differ in history: {sorted(histories)}")
        self.members, self.history = list(members), histories.pop()

    def parameters(self):
        for member in self.members:
            yield from member.parameters()

    @torch.no_grad()
    def one_step(self, u: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation (ddof=1; 0 for one member) of the members' next state."""
        preds = torch.stack([m.eval()(u, p) for m in self.members])
        return preds.mean(0), spread(preds)

    def rollout(
        self, u0: Tensor, p: Tensor, n_steps: int, batch_size: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation of the members' rollouts (see ``training.rollout``)."""
        trajs = torch.stack([rollout(m, u0, p, n_steps, batch_size) for m in self.members])
        return trajs.mean(0), spread(trajs)


def spread(stacked: Tensor) -> Tensor:
    """Standard deviation over the first axis (the members), ddof=1; zeros for one member."""
    if stacked.shape[0] < 2:
        return torch.zeros_like(stacked[0])
    return stacked.std(0, correction=1)
