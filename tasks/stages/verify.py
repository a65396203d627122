"""``pdeflow verify``: every stage's and every block's verdict, from the store alone.

Verification reads every file a record or the block manifest vouches for and compares sizes
and CRC32s; it needs no config. ``repair`` reopens what is bad: damaged blocks lose their
manifest entries, and a damaged stage's record says ``failed``, so that the next run recomputes
exactly that (a damaged model is re-saved from the last checkpoint, not retrained).
"""

from __future__ import annotations

from pdeflow.storage import RunStore
from pdeflow.tasks.stages.integrity import STAGES, changed_upstream, record_problems


def verify_store(store: RunStore, threads: int = 4) -> dict:
    """The verdict of every stage and block of ``store``.

    Returns:
        ``{"ok": bool, "template": [problems], "blocks": {"total", "complete", "damaged":
        {block: reason}, "missing": [blocks]}, "stages": {stage: {"status", "verdict",
        "problems"}}}``; verdict is ``ok``, ``damaged``, ``stale`` (an upstream record changed
        since it ran), ``incomplete`` (not finished) or ``missing``.
    """
    layout = store.layout()
    template = store.template_problems()
    complete = store.complete_blocks(layout) if layout else {}
    damaged = store.block_problems(complete, deep=True, threads=threads)
    total = layout.n_blocks if layout else 0
    missing = sorted(set(range(total)) - set(complete))
    blocks = {"total": total, "complete": len(complete) - len(damaged)}
    blocks |= {"damaged": damaged, "missing": missing}
    stages = {name: _stage_verdict(store, name, template, damaged, missing) for name in STAGES}
    ok = (
        not template
        and not damaged
        and all(v["verdict"] in ("ok", "missing") for v in stages.values())
    )
    return {"ok": ok, "template": template, "blocks": blocks, "stages": stages}


def _stage_verdict(store: RunStore, name: str, template, damaged, missing) -> dict:
    rec = store.record(name)
    if rec is None:
        return {"status": "missing", "verdict": "missing", "problems": []}
    if rec.status != "complete":
        return {"status": rec.status, "verdict": "incomplete", "problems": []}
    if name == STAGES[0]:
        problems = list(template) + [f"block {b}: {why}" for b, why in sorted(damaged.items())]
        if missing:
            problems.append(f"blocks {missing[:10]} are not complete")
    else:
        problems = record_problems(store, name, rec, deep=True)
    if problems:
        return {"status": rec.status, "verdict": "damaged", "problems": problems}
    up = changed_upstream(store, name, rec)
    if up is not None:
        why = f"{up} changed since {name} ran"
        return {"status": rec.status, "verdict": "stale", "problems": [why]}
    return {"status": rec.status, "verdict": "ok", "problems": []}


def repair(store: RunStore, verdict: dict) -> list[str]:
    """Reopen what ``verdict`` found damaged; returns one line per action. Needs the lock."""
    # The runner imports every stage (torch, scikit-learn, Dask): only a repair needs it.
    from pdeflow.tasks.stages.runner import reopen

    done = []
    bad_blocks = sorted(verdict["blocks"]["damaged"])
    if bad_blocks:
        store.reopen_blocks(bad_blocks)
        done.append(f"generate: reopened blocks {bad_blocks} (recomputed by the next run)")
    for name, info in verdict["stages"].items():
        if info["verdict"] == "damaged":
            reopen(store, name, "; ".join(info["problems"][:3]))
            done.append(f"{name}: reopened ({info['problems'][0]})")
    return done
