"""pdeflow's science (solvers, surrogates, ROMs, UQ), the stage lifecycle, and the Prefect task
wrappers of each stage. Importing it does nothing; ``pdeflow.tasks.environment`` holds the
process defaults the CLI applies first (``OMP_WAIT_POLICY=PASSIVE`` among them)."""
