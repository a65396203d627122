"""Example simulators to copy: ``heat_rod`` (a Python function) and ``reaction_diffusion`` (a
standalone program for :class:`~pdeflow.tasks.simulators.ExecutableSimulator`)."""
