"""The ROM a reduce config describes: a POD basis composed with a coefficient regressor."""

from __future__ import annotations

from pdeflow.tasks.config import ReduceConfig
from pdeflow.tasks.rom import POD, ReducedOrderModel, get_approximation


def make_rom(rc: ReduceConfig, pod: POD, initial: POD | None = None) -> ReducedOrderModel:
    """``ReducedOrderModel(reduction=pod, approximation=<rc.approximation>)``, unfitted.

    Args:
        initial: the POD of the initial states when they are regression inputs too, else None.
    """
    kwargs = (
        {"kernel": rc.rbf_kernel, "smoothing": rc.smoothing} if rc.approximation == "rbf" else {}
    )
    return ReducedOrderModel(
        reduction=pod,
        approximation=get_approximation(rc.approximation)(**kwargs),
        initial_reduction=initial,
    )
