"""Stage 1: solve the PDE (or the user's simulator) block by block on Dask, into the store.

A block is ``block_size`` samples solved as one batch by one Dask task, which writes its own
chunks and then its manifest entry. Before trusting any block the stage verifies every complete
block's files (sizes and CRC32s) and recomputes the damaged ones, naming them. A store of the
same settings with fewer samples is grown in place: the design continues, earlier samples keep
their values, seeds and splits, and only new blocks (and a formerly partial last one) are
solved. Fine-grained fan-out goes to Dask directly: one Prefect task per stage, never per block.
"""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np

from pdeflow.storage import ConfigMismatch, RunStore, StageRecord
from pdeflow.storage.dataset import Layout
from pdeflow.tasks import datasets
from pdeflow.tasks.config import GenerateConfig
from pdeflow.tasks.design import SPLITS
from pdeflow.tasks.pdes import BlowUpError
from pdeflow.tasks.simulators import SimulationError
from pdeflow.tasks.solve import solve_parameters
from pdeflow.tasks.stages.base import Outcome, Stage, StageRun, blocks_log, diff


class GenerationError(RuntimeError):
    """One or more blocks failed; completed blocks stay complete and are not recomputed."""


def solve_block(store_path: str, store_name: str, gen: GenerateConfig, block: int) -> dict:
    """Dask task: solve block ``block`` and write it to its own chunk-aligned region.

    A block the manifest already holds is returned as recorded, unsolved: Dask re-runs
    finished tasks whose results were held by a worker that died (prefect #15442). ``gen``
    arrives pickled, validated once in the flow process and never again here.
    """
    from distributed import get_worker

    store = RunStore(store_path, store_name)
    layout = store.layout()
    if (entry := store.complete_block(block, layout)) is not None:
        return {"block": block, "seconds": entry.seconds, "skipped": True}
    try:
        import torch

        torch.set_num_threads(max(1, get_worker().state.nthreads))
    except ValueError:  # called outside a worker (direct use, tests)
        pass
    start, stop = layout.block_range(block)
    params = store.read_coords(gen.parameter_names, start, stop)
    seeds = store.read_coords(["seed"], start, stop)[:, 0]
    t0 = time.perf_counter()
    with store.scratch_dir(f"block-{block}") as work:
        # Sample directories in the store's scratch, which the next run empties after a kill;
        # failed samples kept for debugging (keep_failed) stay in the system's temporary dir.
        keep = gen.problem.keep_failed
        try:
            values = solve_parameters(
                gen, params, seeds, np.arange(start, stop), None if keep else str(work)
            )
        except BlowUpError as err:
            bad = [start + i for i in err.samples]
            raise GenerationError(
                f"block {block}: {type(err).__name__} at t={err.time:.4g} in samples {bad}: {err}"
            ) from None
        except SimulationError as err:
            raise GenerationError(f"block {block}: {err}") from None
    seconds = time.perf_counter() - t0
    try:
        store.write_block(block, values, seconds)
    except OSError as err:  # a full disk, a lost mount: the block stays incomplete
        raise GenerationError(f"block {block}: writing its chunks failed: {err}") from None
    return {"block": block, "seconds": seconds, "skipped": False}


class Generate(Stage):
    name = "generate"
    unit = "blocks"

    def prepare(self, run: StageRun) -> None:
        """Create, grow or repair the template, then verify every complete block."""
        gen, store = run.cfg.generate, run.store
        want, have = datasets.layout(gen), store.layout()
        if have is not None and have.key != want.key:
            if not run.overwrite:
                raise ConfigMismatch(_other_dataset(store, gen))
            store.wipe()
            have = None
        if have is not None and have.n_samples > want.n_samples:
            raise ConfigMismatch(
                f"generate.n_samples: store {store.name!r} holds {have.n_samples} samples of "
                f"these settings; a store never shrinks (asked for {want.n_samples}). Use "
                f"n_samples >= {have.n_samples}, another store name, or --overwrite"
            )
        if have is not None and have.n_samples < want.n_samples:
            _check_growth(gen, have.n_samples, store.attrs().get("config", {}).get("points", []))
            store.write_template(datasets.template(gen))
            run.details["extended_from"] = have.n_samples
        else:
            if run.previous is not None and run.previous.status == "complete":
                run.details["extended_from"] = None  # a later run that grows nothing
            problems = store.template_problems()
            if problems:
                if run.previous is not None:  # not a new store: say what was wrong
                    run.warn(f"generate: {problems[0]}; the template was rebuilt (blocks kept)")
                store.write_template(datasets.template(gen))
                # Its attributes (normalisation statistics) come from the stage's finish.
                run.state["rebuilt"] = True
        complete = store.complete_blocks()
        bad = store.block_problems(complete, deep=True)
        if bad:
            listed = "; ".join(f"block {b}: {why}" for b, why in sorted(bad.items())[:5])
            run.warn(f"generate: {len(bad)} damaged block(s) are recomputed: {listed}")
            store.reopen_blocks(bad)
        run.state["complete"] = {b: e for b, e in complete.items() if b not in bad}
        run.state["repaired"] = sorted(bad)

    def problems(self, run: StageRun, record: StageRecord, deep: bool = True) -> list[str]:
        store = run.store
        if run.state.get("rebuilt"):
            return ["its template was rebuilt"]
        out = store.template_problems(deep=deep)
        layout = store.layout()
        if out or layout is None:
            return out
        complete = run.state.get("complete")
        if complete is None:
            complete = store.complete_blocks(layout)
            out += [f"block {b}: {why}" for b, why in store.block_problems(complete, deep).items()]
        missing = sorted(set(range(layout.n_blocks)) - set(complete))
        if missing:
            out.append(f"blocks {missing[:10]} of {layout.n_blocks} are not complete")
        elif not out and record.outputs != outputs_digest(layout, complete):
            out.append("the blocks differ from those the record was written for")
        return out

    def total(self, run: StageRun) -> int:
        return run.store.layout().n_blocks

    def pending(self, run: StageRun) -> list[int]:
        layout = run.store.layout()
        done = run.state.get("complete")
        done = run.store.complete_blocks(layout) if done is None else done
        return sorted(set(range(layout.n_blocks)) - set(done))

    def compute(self, run: StageRun, units: list[int]) -> None:
        from distributed import as_completed

        from pdeflow.tasks.clusters import task_resources

        gen = run.cfg.generate
        total = run.store.layout().n_blocks
        done = total - len(units)
        run.report(done, total)
        futures = run.client.map(
            solve_block,
            [str(run.store.path)] * len(units),
            [run.store.name] * len(units),
            [gen] * len(units),
            units,
            pure=False,
            resources=task_resources(run.cfg.cluster, gen.device),
        )
        errors, samples = [], 0
        layout = run.store.layout()
        pending = as_completed(futures)
        # Drop each future as it completes: Dask recomputes a lost result only while a client
        # holds its future, so a worker dying later cannot re-run this block.
        del futures
        for fut in pending:
            if fut.status == "error":
                errors.append(str(fut.exception()))
            else:
                done += 1
                samples += _log_block(fut.result(), layout)
                run.report(done, total, samples=samples)
            fut.release()
        if errors:
            raise GenerationError(_failed_blocks(errors, len(units), done, total))
        run.state["computed"] = len(units)

    def finish(self, run: StageRun) -> Outcome:
        store = run.store
        layout = store.layout()
        complete = store.complete_blocks(layout)
        if len(complete) != layout.n_blocks:
            missing = sorted(set(range(layout.n_blocks)) - set(complete))
            raise GenerationError(f"blocks {missing[:10]} are still missing after the run")
        train = store.sample_indices(SPLITS[0])
        store.update_attrs({"normalization": datasets.normalization_stats(store, train)})
        details = {
            "blocks_computed_last_run": run.state.get("computed", 0),
            "blocks_repaired_last_run": run.state.get("repaired", []),
        }
        metrics = {"blocks_total": layout.n_blocks, "blocks_complete": len(complete)}
        return Outcome(metrics, outputs=outputs_digest(layout, complete), details=details)


def _log_block(result: dict, layout: Layout) -> int:
    """Log a block's summary from the flow process (a worker's own log lines stay on the
    worker), so it reaches the flow run's log; returns the block's sample count."""
    start, stop = layout.block_range(result["block"])
    how = "found complete" if result["skipped"] else f"solved in {result['seconds']:.1f} s"
    blocks_log.info(f"generate: block {result['block']} (samples {start}-{stop - 1}) {how}")
    return 0 if result["skipped"] else stop - start


def _failed_blocks(errors: list[str], n_run: int, done: int, total: int) -> str:
    """One message for failed blocks: the first in full, the others by their first line."""
    errors = sorted(errors)
    lines = [
        f"{len(errors)} of {n_run} blocks failed; {done} of {total} complete (run again to "
        "retry only the failed ones):",
        errors[0],
    ]
    lines += [f"also {e.splitlines()[0]}" for e in errors[1:3]]
    if len(errors) > 3:
        lines.append(f"... and {len(errors) - 3} more failed blocks")
    return "\n".join(lines)


def outputs_digest(layout: Layout, complete: dict) -> str:
    """Digest of every block's chunk entries: the same bytes give the same digest."""
    payload = [layout.key, layout.n_samples] + [
        [b, sorted(complete[b].files.items())] for b in sorted(complete)
    ]
    text = json.dumps(payload, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_growth(gen: GenerateConfig, old_n: int, old_points: list) -> None:
    """A store of ``old_n`` samples (its last ``old_points`` chosen) may grow to ``gen``'s:
    chosen points are only appended, after a design that no longer changes; a design grows
    only if it is extendable and no point was chosen yet."""
    old_points = [list(p) for p in old_points]
    if [list(p) for p in gen.points[: len(old_points)]] != old_points:
        raise ConfigMismatch(
            f"generate.points: the store holds {len(old_points)} chosen points that "
            "these points do not start with; chosen points are only appended. Use another "
            "store name, or --overwrite"
        )
    if old_n - len(old_points) == gen.n_design:
        return  # only chosen points are added
    if old_points:
        raise ConfigMismatch(
            f"generate.n_samples: the store's design has {old_n - len(old_points)} samples, "
            f"followed by chosen points; it cannot become {gen.n_design}"
        )
    _check_extendable(gen, old_n)


def _check_extendable(gen: GenerateConfig, old_n: int) -> None:
    from pdeflow.tasks.stages.extend import EXTENDABLE_DESIGNS

    if gen.design not in EXTENDABLE_DESIGNS:
        raise ConfigMismatch(
            f"generate.n_samples: a '{gen.design}' design cannot be extended from {old_n} "
            f"samples (its points depend on its size); use design {' or '.join(EXTENDABLE_DESIGNS)}"
            ", or a new store"
        )


def _other_dataset(store: RunStore, gen: GenerateConfig) -> str:
    old = store.attrs().get("config", {})
    changes = diff(old, gen.model_dump(mode="json")) or ["(the dataset's layout)"]
    return (
        f"store {store.name!r} holds a dataset of a different generate config:\n  "
        + "\n  ".join(f"generate.{c}" for c in changes[:12])
        + "\nUse another store name, or --overwrite to replace it."
    )
