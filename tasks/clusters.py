"""Where a run's Dask work executes: the ``cluster`` section of a pipeline config.

Only the settings live here (plain pydantic, so the UI renders them as a form); building the
cluster from them is ``flows.runtime.dask_client``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ClusterConfig(BaseModel):
    """Where the Dask work runs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["local", "address"] = Field(
        "local", description="local: a LocalCluster sized to this machine; address: a scheduler."
    )
    address: str | None = Field(None, description="Scheduler address (tcp://host:port).")
    n_workers: int | None = Field(
        None, ge=1, le=1024, description="Local worker processes; default one per core."
    )

    @model_validator(mode="after")
    def _check_address(self) -> ClusterConfig:
        if self.kind == "address" and not self.address:
            raise ValueError("kind 'address' needs cluster.address (tcp://host:port)")
        return self
