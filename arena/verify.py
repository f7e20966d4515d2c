"""Re-running stored matches: ``arena reproduce`` (same settings) and ``arena verify``
(twice the steps, a new seed: did the attack converge?)."""

from __future__ import annotations

import random
from typing import Any

from sqlalchemy import select

from arena.api import ConfigError
from arena.data import load_data
from arena.plan import Match
from arena.plugins import load_registry
from arena.run.worker import Worker
from arena.store import models as m
from arena.store import queries

#: Same device, same seed: scores must agree to this many dB (float reduction order only).
REPRODUCE_TOLERANCE_DB = 1e-3
#: ...and the re-crafted adversarial batch must equal the stored one up to this (per pixel).
REPRODUCE_ADV_TOLERANCE = 1e-5
#: Doubling the steps may move the score by at most this much before a match is flagged.
CONVERGENCE_TOLERANCE_DB = 0.5


def stored_match(engine, key: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(select(m.matches).where(m.matches.c.key.startswith(key))).mappings().all()
    if not row:
        raise ConfigError(f"no stored match with key '{key}'")
    if len(row) > 1:
        raise ConfigError(f"key prefix '{key}' matches {len(row)} stored matches; give more characters")
    return dict(row[0])


def rerun(match: Match, device: str | None = None) -> dict[str, Any]:
    from arena.run.harden import hardening_jobs
    from arena.run.executors import LocalExecutor

    d = match.data
    data = load_data(d.name, d.split, root=d.root, images=d.images, size=d.size, seed=d.seed)
    registry = load_registry()
    hardened = LocalExecutor(None, device, registry).harden(hardening_jobs([match], registry))
    return Worker(data, hardened, device=device, registry=registry).run(match)


def _mean(scores: list[dict[str, Any]], field: str = "adv_psnr") -> float:
    return sum(s[field] for s in scores) / len(scores)


def reproduce(engine, key: str, device: str | None = None) -> dict[str, Any]:
    """Re-run one stored match alone and compare its per-image scores with the stored ones."""
    row = stored_match(engine, key)
    if row["status"] != "done":
        raise ConfigError(f"match {row['key']} is {row['status']}; only scored matches can be reproduced")
    result = rerun(Match(**row["spec"]), device)
    stored = {s["image"]: s for s in queries.scores_of(engine, row["id"])}
    diffs = [abs(s["adv_psnr"] - stored[s["image"]]["adv_psnr"]) for s in result["scores"]]
    worst = max(diffs) if diffs else float("inf")
    kept, again = queries.adversarial(engine, row["id"]), result.get("adv")
    adv_diff = (float(abs(kept - again).max()) if kept is not None and again is not None
                and kept.shape == again.shape else float("inf"))
    return {"key": row["key"], "status": result["status"], "stored_adv_psnr": _mean(list(stored.values())),
            "rerun_adv_psnr": _mean(result["scores"]) if result["scores"] else None,
            "max_abs_diff_db": worst, "tolerance_db": REPRODUCE_TOLERANCE_DB,
            "max_adv_diff": adv_diff, "adv_tolerance": REPRODUCE_ADV_TOLERANCE,
            "same": result["status"] == "done" and worst <= REPRODUCE_TOLERANCE_DB
            and adv_diff <= REPRODUCE_ADV_TOLERANCE,
            "device": result["device"], "stored_device": row["device"]}


def verify(engine, sample: int = 4, seed: int = 0, tolerance: float = CONVERGENCE_TOLERANCE_DB,
           device: str | None = None) -> list[dict[str, Any]]:
    """Re-run a sample of iterative matches at twice the steps with a new seed."""
    done = [r for r in queries.matches(engine, status="done")
            if r["attack_kind"] in ("white-box", "score-based", "transfer") and r["attack"] != "fgsm"]
    rng = random.Random(seed)
    chosen = rng.sample(done, min(sample, len(done)))
    out = []
    for row in chosen:
        spec = dict(row["spec"])
        spec["budget"] = dict(spec["budget"], steps=2 * spec["budget"]["steps"])
        spec["seed"] = spec["seed"] + 1000 + seed
        result = rerun(Match(**spec), device)
        before = _mean(queries.scores_of(engine, row["id"]))
        after = _mean(result["scores"]) if result["scores"] else float("nan")
        out.append({"key": row["key"], "restorer": row["restorer"], "defense": row["defense"],
                    "attack": row["attack"], "threat": row["threat"], "norm": row["norm"], "eps": row["eps"],
                    "adv_psnr": before, "adv_psnr_2x": after, "moved_db": before - after,
                    "converged": abs(before - after) <= tolerance})
    return out


def not_converged_flags(results: list[dict[str, Any]], tolerance: float) -> list[dict[str, Any]]:
    """Flags for ``store_flags(..., rerun=True)``: each names its match (``key``), so that it is
    shown only by the tournaments that include that match."""
    return [{"key": r["key"], "threat": r["threat"], "norm": r["norm"], "eps": r["eps"],
             "restorer": r["restorer"], "defense": r["defense"], "attack": r["attack"], "flag": "not-converged",
             "reason": f"twice the steps and a new seed move the score by {r['moved_db']:+.2f} dB "
                       f"(tolerance {tolerance} dB)"} for r in results if not r["converged"]]
