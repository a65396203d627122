"""Prefect flows of pdeflow: one per stage and a pipeline that chains them."""
