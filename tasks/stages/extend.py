"""Growing a store: ``extend_by`` samples per run, and what each growth changed.

A scheduled run cannot know how many samples the store holds when it fires, so the ``generate``
and ``pipeline`` flows take ``extend_by``: the run reads the store's size, runs with
``generate.n_samples = size + extend_by`` (the design continued, only new blocks solved, see
``stages.generate``; training warm-starts and the ROM and UQ are refitted, see
``stages.base.is_extension``), appends the growth to the generate record's ``extensions``
lineage, and its flow publishes a before/after report (``changes_markdown``). Everything about
extensions is here; nothing in it knows Prefect.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field, ValidationError

from pdeflow.storage import RunStore
from pdeflow.tasks.config import PipelineConfig, format_validation_error
from pdeflow.tasks.stages.runner import annotate, require_ready
from pdeflow.tasks.stages.status import summary as store_summary

EXTENDABLE_DESIGNS = ("random", "sobol")
# The flows' ``extend_by`` parameter; its description in the UI comes from each flow's docstring.
ExtendBy = Annotated[int, Field(ge=0, le=10_000_000)]


class ExtensionError(ValueError):
    """A run cannot grow the store by ``extend_by`` samples; the message names the field."""


def check_extendable(design: str, extend_by: int, overwrite: bool, recurring: bool = False) -> None:
    """Refuse what no store content can make work, before any store is read.

    Args:
        design: ``generate.design``.
        extend_by: samples to add, >= 0; 0 checks nothing.
        overwrite: the run's ``overwrite`` flag (it would wipe what is to be extended).
        recurring: the same ``extend_by`` is applied again and again (a schedule): a Sobol'
            design, balanced only at powers of 2, can take it at most once.

    Raises:
        ExtensionError: naming ``extend_by``, ``overwrite`` or ``generate.design``.
    """
    if extend_by < 0:
        raise ExtensionError(f"extend_by: must be >= 0 (got {extend_by})")
    if not extend_by:
        return
    if overwrite:
        raise ExtensionError(
            "extend_by: cannot be combined with overwrite=True (overwrite replaces the store that "
            "extend_by would grow); set one of them"
        )
    if design not in EXTENDABLE_DESIGNS:
        raise ExtensionError(
            f"generate.design: a '{design}' design cannot be extended (its points depend on the "
            f"design size); extend_by needs one of {', '.join(EXTENDABLE_DESIGNS)}"
        )
    if design == "sobol" and recurring:
        raise ExtensionError(
            "extend_by: a Sobol' design is balanced only at powers of 2, which growth by a fixed "
            f"{extend_by} samples per run reaches at most once; use generate.design 'random' for "
            "a recurring extension"
        )


def stored_samples(store: RunStore) -> int:
    """Samples the store's dataset holds or is being grown to (complete or not); 0 for none."""
    marker = store.marker() or {}
    return int(marker.get("layout", {}).get("n_samples", 0))


def plan_extension(
    cfg: PipelineConfig,
    extend_by: int,
    overwrite: bool = False,
    stages: Sequence[str] = ("generate",),
    run_id: str | None = None,
) -> tuple[PipelineConfig, int]:
    """The config of a run that grows the store by ``extend_by`` samples of the same design.

    The store's current size decides: a complete store of ``n`` samples gives ``n + extend_by``;
    a store whose extension was interrupted is first finished, to the larger of its pending size
    and ``extended_from + extend_by``; no store gives ``generate.n_samples`` (the campaign's
    first run). A retry of flow run ``run_id`` keeps the size that run planned (the generate
    record's ``planned_extension``), so retrying a failed run never grows the store twice.

    Args:
        cfg: the run's config; its ``generate.n_samples`` only sizes a new store.
        extend_by: samples to add, >= 0; 0 returns ``cfg`` unchanged.
        overwrite: the run's ``overwrite`` flag.
        stages: the stages the run computes; their records are checked against ``cfg``.
        run_id: the flow run's id, None outside a flow run.

    Returns:
        The config to run, and the complete sample count before the run (0 for a new store).

    Raises:
        ExtensionError: a design or size the extension cannot take (names the field).
        ConfigMismatch: the store holds results of other settings.
    """
    gen = cfg.generate
    check_extendable(gen.design, extend_by, overwrite)
    store = RunStore.named(cfg.store)
    rec, n_now = store.record("generate"), stored_samples(store)
    if rec is None or not n_now:
        return cfg, 0
    if not extend_by:
        return cfg, n_now if rec.status == "complete" else 0
    planned = rec.details.get("planned_extension") or {}
    if run_id is not None and planned.get("flow_run_id") == run_id:
        before, target = planned["from"], planned["to"]
    elif rec.status == "complete":
        before, target = n_now, n_now + extend_by
    elif rec.details.get("extended_from") is not None:
        before = int(rec.details["extended_from"])
        target = max(n_now, before + extend_by)
    else:  # the first generation never finished: finish it, grow on the next run
        before, target = 0, n_now
    if gen.design == "sobol" and before and target & (target - 1):
        up = 1 << (target - 1).bit_length()
        raise ExtensionError(
            f"extend_by: a Sobol' design is balanced only at powers of 2; store '{cfg.store}' "
            f"holds {before} samples, so extend_by={extend_by} gives {target} (extend_by="
            f"{up - before} gives {up}); or use generate.design 'random' in a new store"
        )
    data = cfg.model_dump(mode="json")
    data["generate"]["n_samples"] = target
    try:
        grown = PipelineConfig.model_validate(data)
    except ValidationError as err:
        raise ExtensionError(
            f"extend_by: {before} + {extend_by} samples do not fit the config: "
            + format_validation_error(err).replace("\n", "; ")
        ) from None
    require_ready(grown, tuple(stages), overwrite=False)
    return grown, before


def run_changes(store: RunStore, before: dict, samples_before: int, summaries: dict) -> dict:
    """What one run changed in a store, for the run's summary and its report.

    Args:
        store: the run store.
        before: ``status.summary(store)`` taken before the run.
        samples_before: complete samples before the run (``plan_extension``).
        summaries: the run's stage summaries, by stage name.

    Returns:
        ``samples_before``, ``samples_after``, ``samples_added``, ``blocks_computed`` (generate),
        ``epochs_trained`` and ``warm_started`` (train), and ``metrics``: every stage metric
        whose value changed, as ``{"before": old, "after": new}`` (None where absent).
    """
    n_after = stored_samples(store)
    out: dict = {
        "samples_before": samples_before,
        "samples_after": n_after,
        "samples_added": n_after - samples_before,
    }
    if "generate" in summaries:
        out["blocks_computed"] = summaries["generate"]["computed"]
    if "train" in summaries:
        trained = summaries["train"]["computed"]
        rec = store.record("train")
        out["epochs_trained"] = trained
        out["warm_started"] = bool(trained and rec and rec.details.get("warm_started"))
    old, new = before["metrics"], store_summary(store)["metrics"]
    out["metrics"] = {
        key: {"before": old.get(key), "after": new.get(key)}
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    }
    return out


def record_extension(store: RunStore, changes: dict, run_id: str | None) -> None:
    """Append one run's growth to the generate record's ``extensions`` list (the lineage).

    Each entry: ``from`` and ``to`` (samples), ``blocks_computed``, ``warm_started`` (when the
    run trained), ``flow_run_id`` and ``finished`` (UTC, ISO 8601).
    """
    rec = store.record("generate")
    if rec is None:
        return
    entry = {
        "from": changes["samples_before"],
        "to": changes["samples_after"],
        "blocks_computed": changes.get("blocks_computed"),
        "flow_run_id": run_id,
        "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    if "warm_started" in changes:
        entry["warm_started"] = changes["warm_started"]
    extensions = [*rec.details.get("extensions", []), entry]
    annotate(store, "generate", extensions=extensions, planned_extension=None)


def _cell(value) -> str:
    return "-" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def changes_markdown(store_name: str, changes: dict) -> str:
    """A markdown report of ``run_changes``: counts, then a before/after table of metrics."""
    b, a = changes["samples_before"], changes["samples_after"]
    lines = [f"# What this run changed in store `{store_name}`", ""]
    lines.append(f"- samples: {b} -> {a} ({a - b:+d})")
    if "blocks_computed" in changes:
        lines.append(f"- blocks solved: {changes['blocks_computed']} (earlier blocks kept)")
    if "epochs_trained" in changes:
        how = "warm-started from the previous model" if changes["warm_started"] else "from scratch"
        lines.append(f"- surrogate: {changes['epochs_trained']} epochs trained, {how}")
    lines += ["", "| metric | before | after | change |", "|---|---|---|---|"]
    for key, m in changes["metrics"].items():
        old, new = m["before"], m["after"]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (old, new))
        delta = _cell(new - old) if numeric else ""
        lines.append(f"| {key} | {_cell(old)} | {_cell(new)} | {delta} |")
    if not changes["metrics"]:
        lines.append("| (no metric changed) | | | |")
    return "\n".join(lines)


@dataclass
class Growth:
    """A run that grows a store: where it started, to finish once its stages are done."""

    store: RunStore
    before: dict
    samples_before: int
    run_id: str | None

    def finish(self, summaries: dict) -> dict:
        """``run_changes`` of the run, also appended to the generate record's lineage."""
        changes = run_changes(self.store, self.before, self.samples_before, summaries)
        record_extension(self.store, changes, self.run_id)
        return changes


def begin_extension(
    cfg: PipelineConfig,
    extend_by: int,
    overwrite: bool,
    stages: Sequence[str],
    run_id: str | None = None,
) -> tuple[PipelineConfig, Growth | None]:
    """Start a run that grows the store by ``extend_by`` samples (see ``plan_extension``).

    Before anything is written, checks what the (grown) config's stages need
    (``PipelineConfig.check_stages``). Needs the store's lock (it records the plan).

    Returns:
        The config to run, and the growth to ``finish``; None when ``extend_by`` is 0.
    """
    if not extend_by:
        cfg.check_stages(tuple(stages))
        return cfg, None
    grown, samples_before = plan_extension(cfg, extend_by, overwrite, stages, run_id)
    grown.check_stages(tuple(stages))  # on the grown size, before anything is written
    store = RunStore.named(grown.store)
    if run_id is not None and store.record("generate") is not None:
        plan = {"flow_run_id": run_id, "from": samples_before, "to": grown.generate.n_samples}
        annotate(store, "generate", planned_extension=plan)
    return grown, Growth(store, store_summary(store), samples_before, run_id)
