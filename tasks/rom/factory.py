"""The ROM a reduce config describes: a POD basis composed with a coefficient regressor."""

from __future__ import annotations

from pdeflow.tasks.config import ReduceConfig
from pdeflow.tasks.rom import POD, ReducedOrderModel, get_approximation

# The methods that are a POD composed with a regression, and the regression each uses.
POD_REGRESSIONS = {"pod-rbf": "rbf", "pod-gpr": "gpr", "pod-nn": "nn"}


def make_rom(
    rc: ReduceConfig, pod: POD, initial: POD | None = None, method: str | None = None
) -> ReducedOrderModel:
    """``ReducedOrderModel(reduction=pod, approximation=<the method's regression>)``, unfitted.

    Args:
        initial: the POD of the initial states when they are regression inputs too, else None.
        method: a POD-regression method (``pod-rbf``, ``pod-gpr``, ``pod-nn``); default
            ``rc.method``.
    """
    name = POD_REGRESSIONS[method or rc.method]
    kwargs = {
        "rbf": {"kernel": rc.rbf_kernel, "smoothing": rc.smoothing},
        "gpr": {},
        "nn": {"hidden_layer_sizes": rc.nn_hidden},
    }[name]
    return ReducedOrderModel(
        reduction=pod,
        approximation=get_approximation(name)(**kwargs),
        initial_reduction=initial,
    )
