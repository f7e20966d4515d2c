"""The driver: plan, resume, harden, dispatch, and write every result as it arrives.

Only the driver writes to the database, one transaction per result, so a crash loses at most
the matches in flight and a rerun finishes the rest.
"""

from __future__ import annotations

import platform
import shlex
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

import arena
from arena.data import load_data
from arena.flags import compute_flags, store_flags
from arena.plan import Match, Tournament, config_hash, plan
from arena.plugins import Registry, describe, load_registry
from arena.run.worker import hardened_key, hardening_link
from arena.store import write
from arena.store.db import normalise_url, open_writer


def code_version() -> str:
    """Package version plus the git commit of the checkout, when there is one."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(arena.__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{arena.__version__}+{sha}" if sha else arena.__version__


def results_dir(db: str) -> Path:
    url = normalise_url(db)
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return Path(url[len("sqlite:///"):]).parent
    return Path("arena-results")


@dataclass
class RunReport:
    tournament_id: int
    planned: int
    counts: Counter = field(default_factory=Counter)
    resumed: int = 0


def summarise_plan(matches: list[Match]) -> str:
    planned = [m for m in matches if m.status == "planned"]
    skipped = [m for m in matches if m.status == "skipped"]
    lines = [f"{len(matches)} matches: {len(planned)} to run, {len(skipped)} skipped"]
    by = Counter((m.threat, m.budget.label()) for m in planned)
    for (threat, budget), n in sorted(by.items()):
        lines.append(f"  {threat:9s} {budget:22s} {n} matches")
    reasons = Counter(m.reason for m in skipped)
    for reason, n in reasons.most_common():
        lines.append(f"  skipped ({n}): {reason}")
    return "\n".join(lines)


def _versions(registry: Registry, match: Match) -> dict[str, str]:
    out = {}
    for role, spec in [("restorer", match.restorer), ("attack", match.attack),
                       *(("defense", d) for d in match.defense)]:
        e = registry.get(role, spec.name)
        out[f"{role}:{spec.name}"] = f"{e.package} {e.version}".strip()
    return out


def match_row(match: Match, result: dict[str, Any], registry: Registry, version: str) -> dict[str, Any]:
    timings = result.get("timings") or {}
    return {
        "key": match.key, "restorer": match.restorer.name, "defense": match.defense_label,
        "attack": match.attack.name, "attack_kind": match.attack_kind, "threat": match.threat,
        "norm": match.budget.norm, "eps": match.budget.eps, "steps": match.budget.steps,
        "queries_limit": match.budget.queries, "eot": match.eot, "seed": match.seed,
        "spec": match.model_dump(mode="json"), "status": result["status"],
        "reason": result.get("reason"), "error": result.get("error"), "device": result.get("device"),
        "code_version": version, "versions": _versions(registry, match),
        "time_clean_s": timings.get("clean"), "time_attack_s": timings.get("attack"),
        "time_total_s": timings.get("total"), "defense_ms_per_mp": result.get("defense_ms_per_mp"),
        "peak_mem_mb": result.get("peak_mem_mb"), "gradient_calls": result.get("gradient_calls"),
        "trace": result.get("trace"), "start_grad": result.get("start_grad"),
        "attempts": result.get("attempts", 1), "node": result.get("node"),
        "started_at": result.get("started_at"), "finished_at": result.get("finished_at"),
    }


def save_samples(root: Path, match: Match, result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for s in result.get("samples") or []:
        path = root / "samples" / match.key / f"{s['image']}_{s['kind']}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(s["array"]).save(path)
        rows.append({"image": s["image"], "kind": s["kind"], "path": str(path)})
    return rows


def run_tournament(t: Tournament, db: str, *, executor: str = "ray", address: str | None = None,
                   rerun_failed: bool = False, device: str | None = None, progress: bool = True,
                   command: str | None = None, registry: Registry | None = None) -> RunReport:
    registry = registry or load_registry()
    matches = plan(t, registry)  # every config error surfaces here, before anything is written
    engine = open_writer(db)  # fails now if the database is locked or unreachable
    stored = write.stored_statuses(engine, [m.key for m in matches])
    pending = [m for m in matches
               if stored.get(m.key) is None or (rerun_failed and stored.get(m.key) == "failed")]
    # resources are checked before anything is written, so a bad cluster leaves no trace
    ex = _executor(executor, t, address, device, registry) if any(m.status == "planned" for m in pending) else None
    data = load_data(t.data.name, t.data.split, root=t.data.root, images=t.data.images,
                     size=t.data.size, seed=t.data.seed)
    version = code_version()
    tid = write.upsert_tournament(
        engine, config_hash=config_hash(t), name=t.name, config=t.model_dump(mode="json"),
        command=command or " ".join(shlex.quote(a) for a in ["arena", *sys.argv[1:]]),
        code_version=version, plugin_versions={e.plugin: f"{e.package} {e.version}".strip() for e in registry.all()},
        seed=t.seed, host=platform.node(), data_version=data.version, data_hash=data.hash,
    )
    write.record_entrants(engine, [
        {k: v for k, v in describe(e).items() if k in ("role", "name", "kind", "package", "version")}
        | {"params": e.cls.param_table()} for e in registry.all()
    ])
    report = RunReport(tid, len(matches))
    todo = []
    for m in pending:
        if m.status == "skipped":
            write.write_result(engine, tid, match_row(m, {"status": "skipped", "reason": m.reason},
                                                      registry, version), [])
            report.counts["skipped"] += 1
        else:
            todo.append(m)
    pending_keys = {m.key for m in pending}
    resumed = [m.key for m in matches if m.key not in pending_keys]
    report.resumed = len(resumed)
    write.link_matches(engine, tid, resumed)
    if not todo:
        refresh_flags(engine, registry)
        return report

    root = results_dir(db).resolve()  # absolute, so the dashboard finds samples from any cwd
    bar = tqdm(total=len(todo), desc="matches", unit="match", disable=not progress, dynamic_ncols=True)
    running: set[str] = set()

    def on_start(m: Match) -> None:
        running.add(m.key)
        bar.set_postfix(_postfix(report.counts, len(running)), refresh=True)

    def on_result(m: Match, result: dict[str, Any]) -> None:
        running.discard(m.key)
        samples = save_samples(root, m, result) if result["status"] == "done" else []
        write.write_result(engine, tid, match_row(m, result, registry, version),
                           result.get("scores") or [], samples)
        report.counts[result["status"]] += 1
        if result["status"] == "failed" and progress:
            tqdm.write(f"failed: {m.label()}: {result.get('reason')}")
        bar.update(1)
        bar.set_postfix(_postfix(report.counts, len(running)), refresh=True)

    try:
        hardened = ex.harden(hardening_jobs(todo, registry))
        ex.run(todo, data, hardened, on_result, on_start)
    finally:
        bar.close()
        ex.close()
        refresh_flags(engine, registry)
    return report


def refresh_flags(engine, registry: Registry) -> None:
    random = {e.name for e in registry.entries["defense"].values() if e.cls.random}
    min_norm = {e.name for e in registry.entries["attack"].values() if e.cls.minimum_norm}
    store_flags(engine, compute_flags(engine, random, min_norm))


def _postfix(counts: Counter, running: int) -> dict[str, int]:
    return {"done": counts["done"], "failed": counts["failed"], "dq": counts["disqualified"],
            "skipped": counts["skipped"],
            "running": running}


def hardening_jobs(todo: list[Match], registry: Registry) -> list[tuple]:
    jobs = {}
    for m in todo:
        link = hardening_link(m, registry)
        if link is not None:
            key = hardened_key(m.restorer, link, m, registry)
            jobs[key] = (key, m.restorer, link, m.data, m.seed)
    return list(jobs.values())


def _executor(name: str, t: Tournament, address: str | None, device: str | None, registry):
    from arena.run.executors import LocalExecutor, RayExecutor

    if name == "local":
        return LocalExecutor(t, device, registry)
    if name == "ray":
        return RayExecutor(t, address)
    raise ValueError(f"unknown executor '{name}' (allowed: ray, local)")
