"""The driver: plan, resume, harden, dispatch, and write every result as it arrives.

Only the driver writes to the database, one transaction per result, so a crash loses at most
the matches in flight and a rerun finishes the rest.
"""

from __future__ import annotations

import platform
import shlex
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

import arena
from arena.data import load_data
from arena.display import results_dir, sample_file
from arena.flags import refresh_flags
from arena.plan import Match, Tournament, config_hash, plan
from arena.plugins import Registry, describe, load_registry
from arena.run.harden import hardened_key, hardening_failure, hardening_jobs, hardening_link
from arena.store import write
from arena.store.db import open_writer, sqlite_path


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


@dataclass
class RunReport:
    tournament_id: int
    planned: int
    counts: Counter = field(default_factory=Counter)
    resumed: int = 0


def summarise_plan(matches: list[Match], registry: Registry | None = None) -> str:
    from arena.run.share import computations

    planned = [m for m in matches if m.status == "planned"]
    skipped = [m for m in matches if m.status == "skipped"]
    lines = [f"{len(matches)} matches: {len(planned)} to run, {len(skipped)} skipped"]
    if registry is not None:
        lines[0] += f"; {computations(planned, registry)} attack computations (arena/run/share.py)"
    by = Counter((m.threat, m.budget.label()) for m in planned)
    for (threat, budget), n in sorted(by.items()):
        lines.append(f"  {threat:9s} {budget:22s} {n} matches")
    suites = Counter(m.suite for m in planned if m.suite)
    for suite, n in sorted(suites.items()):
        lines.append(f"  suite {suite}: {n} of them ({', '.join(sorted({m.attack.name for m in planned if m.suite == suite}))})")
    reasons = Counter(m.reason for m in skipped)
    for reason, n in reasons.most_common():
        lines.append(f"  skipped ({n}): {reason}")
    return "\n".join(lines)


def match_row(match: Match, result: dict[str, Any], version: str,
              registry: Registry | None = None) -> dict[str, Any]:
    timings = result.get("timings") or {}
    attack = registry.get("attack", match.attack.name, allow_unavailable=True).cls if registry else None
    return {
        "key": match.key, "restorer": match.restorer.name, "defense": match.defense_label,
        "attack": match.attack.name, "attack_kind": match.attack_kind, "threat": match.threat,
        "norm": match.budget.norm, "eps": match.budget.eps, "steps": match.budget.steps,
        "queries_limit": match.budget.queries, "eot": match.eot, "seed": match.seed,
        "spec": match.model_dump(mode="json"), "status": result["status"],
        "reason": result.get("reason"), "error": result.get("error"), "device": result.get("device"),
        "code_version": version, "versions": match.versions,
        "time_clean_s": timings.get("clean"), "time_attack_s": timings.get("attack"),
        "time_total_s": timings.get("total"), "defense_ms_per_mp": result.get("defense_ms_per_mp"),
        "attack_ms_per_mp": result.get("attack_ms_per_mp"),
        "peak_mem_mb": result.get("peak_mem_mb"), "gradient_calls": result.get("gradient_calls"),
        "trace": result.get("trace"), "start_grad": result.get("start_grad"),
        "attempts": result.get("attempts", 1), "node": result.get("node"),
        "started_at": result.get("started_at"), "finished_at": result.get("finished_at"),
        "blame": result.get("blame"), "verified": False, "eot_used": result.get("eot_used"),
        "evaluations": result.get("evaluations"), "evaluation_limit": result.get("evaluation_limit"),
        "probes": result.get("probes"),
        "minimum_norm": attack.minimum_norm if attack is not None else None,  # a trait the flags read
        "suite": match.suite, "frozen": match.frozen,
        "escalated": (result.get("protocol") or {}).get("escalated"),
        "lower_bound": (result.get("protocol") or {}).get("lower_bound"),
        "moved_db": result.get("moved_db"), "converged": result.get("converged"),
        "protocol": result.get("protocol"),
    }


def save_samples(root: Path, match: Match, result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for s in result.get("samples") or []:
        path = sample_file(root, match.key, s["image"], s["kind"])
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(s["array"]).save(path)
        rows.append({"image": s["image"], "kind": s["kind"], "path": str(path)})
    return rows


def run_tournament(t: Tournament, db: str, *, executor: str = "ray", address: str | None = None,
                   rerun_failed: bool = False, device: str | None = None, progress: bool = True,
                   command: str | None = None, registry: Registry | None = None,
                   share: bool = True) -> RunReport:
    registry = registry or load_registry()
    matches = plan(t, registry)  # every config error surfaces here, before anything is written
    path = sqlite_path(db)
    # a database file is created only once the cluster is accepted (its address, its GPUs)
    ex = (_executor(executor, t, address, device, registry)
          if path is not None and not path.exists() and any(m.status == "planned" for m in matches) else None)
    try:
        engine = open_writer(db)  # fails now if the database is locked or unreachable
    except BaseException:
        if ex is not None:
            ex.close()
        raise
    stored = write.stored_statuses(engine, [m.key for m in matches])
    pending = [m for m in matches
               if stored.get(m.key) is None or (rerun_failed and stored.get(m.key) == "failed")]
    # resources are checked before anything is written, so a bad cluster leaves no trace
    if ex is None and any(m.status == "planned" for m in pending):
        ex = _executor(executor, t, address, device, registry)
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
    escalated = escalations(engine, tid, matches)  # what the stored results already call for
    stored.update(write.stored_statuses(engine, [m.key for m in escalated]))
    pending += [m for m in escalated
                if stored.get(m.key) is None or (rerun_failed and stored.get(m.key) == "failed")]
    matches += escalated
    report = RunReport(tid, len(matches))
    write.set_planned(engine, tid, len(matches))  # the dashboard's total and ETA
    todo = []
    for m in pending:
        if m.status == "skipped":
            write.write_result(engine, tid, match_row(m, {"status": "skipped", "reason": m.reason},
                                                      version, registry), [])
            report.counts["skipped"] += 1
        else:
            todo.append(m)
    pending_keys = {m.key for m in pending}
    report.resumed = sum(m.key not in pending_keys for m in matches)
    write.relink(engine, tid, [m.key for m in matches])  # older code's rows leave this leaderboard
    to_verify = write.unverified(engine, tid)
    if not todo and not to_verify:
        if ex is not None:
            ex.close()
        refresh_flags(engine, tid)
        return report
    if ex is None:
        ex = _executor(executor, t, address, device, registry)

    root = results_dir(db).resolve()  # absolute, so the dashboard finds samples from any cwd
    bar = tqdm(total=len(todo), desc="matches", unit="match", disable=not progress, dynamic_ncols=True)
    running: set[str] = set()
    owner, lease = write.driver_id(), CLAIM_LEASE_S
    elsewhere: list[Match] = []  # claimed by another driver on this database
    heartbeat = ClaimHeartbeat(engine, owner, lease)
    heartbeat.start()

    def on_start(m: Match) -> bool:
        """Claim ``m`` before it runs; False: skip it (stored meanwhile, or another driver's)."""
        state = write.claim(engine, m.key, owner, lease, rerun_failed)
        if state != "mine":
            if state == "elsewhere":
                elsewhere.append(m)
            else:
                report.counts[ELSEWHERE] += 1
                bar.update(1)
            return False
        running.add(m.key)
        bar.set_postfix(_postfix(report.counts, len(running)), refresh=True)
        return True

    def on_result(m: Match, result: dict[str, Any]) -> None:
        running.discard(m.key)
        samples = save_samples(root, m, result) if result["status"] == "done" else []
        write.write_result(engine, tid, match_row(m, result, version, registry),
                           result.get("scores") or [], samples, adv=result.get("adv"))
        report.counts[result["status"]] += 1
        if result["status"] == "failed" and progress:
            tqdm.write(f"failed: {m.label()}: {result.get('reason')}")
        bar.update(1)
        bar.set_postfix(_postfix(report.counts, len(running)), refresh=True)

    try:
        by_key = {m.key: m for m in matches}
        verify_later = [by_key[r["key"]] for r in to_verify if r["key"] in by_key]
        hardened = ex.harden(hardening_jobs(todo + verify_later, registry))
        unhardened = {m.key: f for m in todo if (f := hardening_failure(m, hardened, registry))}
        for m in todo:  # their weights could not be built: failed, blamed on the system
            if m.key in unhardened and on_start(m):
                on_result(m, unhardened[m.key])
        run_shared(ex, [m for m in todo if m.key not in unhardened], data, hardened, on_result, on_start,
                   registry if share else None)
        while elsewhere:  # wait for the other drivers; take over what a dead or late one left
            time.sleep(CLAIM_POLL_S)
            waiting, mine = list(elsewhere), []
            elsewhere.clear()
            for m in waiting:
                state = write.claim(engine, m.key, owner, lease, rerun_failed)
                if state == "stored":
                    report.counts[ELSEWHERE] += 1
                    bar.update(1)
                else:
                    (mine if state == "mine" else elsewhere).append(m)
            ex.run(mine, data, hardened, on_result, on_start)
        known = {m.key for m in matches}
        more = [m for m in escalations(engine, tid, matches) if m.key not in known]
        if more:  # the standard suite's escalation: reruns through BPDA, then re-scored with the rest
            matches += more
            report.planned = len(matches)
            write.set_planned(engine, tid, len(matches))
            bar.total += len(more)
            ex.run(more, data, hardened, on_result, on_start)
        bar.close()
        report.counts.update(rescore_tournament(engine, tid, ex, registry, hardened, t, owner, lease))
    finally:
        bar.close()
        ex.close()
        heartbeat.stop()
        write.release_claims(engine, owner)
        refresh_flags(engine, tid)
    return report


#: what a run's counts call the matches another driver on the same database computed
ELSEWHERE = "by another driver"
#: seconds between looks at the matches another driver has claimed
CLAIM_POLL_S = 2.0


#: how long a claim holds unless its driver renews it: a live driver renews its claims every
#: third of this (ClaimHeartbeat), so one that died on another host holds its matches for at
#: most this long (on this host, at once: its pid is gone)
CLAIM_LEASE_S = 120.0


class ClaimHeartbeat(threading.Thread):
    """Renews a driver's claims every third of their lease while it runs, however long its
    matches take. A beat that fails (the database busy) is skipped: the next one renews."""

    def __init__(self, engine, owner: str, lease_s: float):
        super().__init__(name="arena-claims", daemon=True)
        self.engine, self.owner, self.lease_s = engine, owner, lease_s
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.lease_s / 3):
            try:
                write.renew_claims(self.engine, self.owner, self.lease_s)
            except Exception:  # noqa: BLE001 - a missed beat; the lease has two more in it
                pass

    def stop(self) -> None:
        self._stopped.set()
        self.join()


#: what a match that reuses another's attack computation takes from its result
SHARED = ("key", "adv", "trace", "start_grad", "gradient_calls", "eot_used", "evaluations",
          "evaluation_limit", "moved_db", "converged", "protocol", "attack_ms_per_mp")


def run_shared(ex, matches: list[Match], data, hardened, on_result, on_start, registry: Registry | None) -> None:
    """Run the matches, each attack computation once (arena/run/share.py): a match that can
    reuse another's computation waits for it (``after``) and then gets its result to verify and
    score (``given``, filled as results come in), in one pass over warm workers. Without a
    registry, or where the computing match failed or its attack looked at the defended system,
    a match attacks for itself."""
    from arena.run.share import split

    computing, reuse = split(matches, registry) if registry is not None else (matches, {})
    dependents: dict[str, list[str]] = {}
    for key, source in reuse.items():
        dependents.setdefault(source, []).append(key)
    given: dict[str, dict] = {}

    def keep(m: Match, result: dict[str, Any]) -> None:
        if m.key in dependents and result["status"] == "done" and result.get("shareable"):
            shared = {k: result.get(k) for k in SHARED}
            given.update({key: shared for key in dependents[m.key]})
        on_result(m, result)

    # the computing matches first: an executor that runs in order (local) meets each source
    # before the matches that reuse it
    ordered = computing + [m for m in matches if m.key in reuse]
    ex.run(ordered, data, hardened, keep, on_start, given=given, after=reuse)


def escalations(engine, tid: int, matches: list[Match]) -> list[Match]:
    """Escalated copies (BPDA through every link) of the white-box suite matches of each system
    whose stored results show a gradient-free attack beating every gradient attack on an image
    (arena.flags.to_escalate)."""
    from arena.flags import to_escalate

    systems = to_escalate(engine, tid)
    return [m.model_copy(update={"escalate": True}) for m in matches
            if m.suite and m.threat == "adaptive" and m.attack_kind == "white-box" and not m.escalate
            and m.status == "planned"
            and (m.threat, m.budget.norm, m.budget.eps, m.restorer.name, m.defense_label, m.seed) in systems]


def rescore_tournament(engine, tid: int, ex, registry: Registry, hardened: dict[str, str],
                       t: Tournament, owner: str | None = None, lease_s: float = CLAIM_LEASE_S) -> Counter:
    """The score that counts: every finished match's stored adversarial batch is scored again by
    freshly built systems in one fresh process. A system whose fresh scores differ
    from the warm worker's by more than STATEFUL_TOLERANCE_DB is disqualified as stateful.

    With an ``owner`` (a driver that shares the database), each match's re-scoring is claimed
    first: two drivers split it, and one waits for what another re-scores, taking over from a
    driver that died."""
    counts: Counter = Counter()
    while True:
        rows = [r for r in write.unverified(engine, tid) if r["adv"] is not None]
        if owner is None:
            return counts + _rescore(engine, rows, ex, registry, hardened)
        mine = [r for r in rows if write.claim(engine, RESCORE + r["key"], owner, lease_s) == "mine"]
        counts += _rescore(engine, mine, ex, registry, hardened)
        if len(mine) == len(rows):
            return counts
        time.sleep(CLAIM_POLL_S)  # another driver re-scores the rest: wait until they are stored


#: the claim key of a match's re-scoring: the match key after this prefix
RESCORE = "rescore:"


def _rescore(engine, rows: list[dict[str, Any]], ex, registry: Registry, hardened: dict[str, str]) -> Counter:
    """Re-score ``rows`` (unverified done matches with their batches), by system."""
    from arena.match import STATEFUL_TOLERANCE_DB, warm_gap

    if not rows:
        return Counter()
    systems: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        r["match"] = Match(**r["spec"])
        systems.setdefault(_system_key(r["match"]), []).append(r)
    rows = [r for members in systems.values() for r in members]
    counts: Counter = Counter()
    for k, members in list(systems.items()):  # weights that could not be built this time
        link = hardening_link(members[0]["match"], registry)
        if link is not None and hardened_key(members[0]["match"].restorer, link, members[0]["match"], registry) not in hardened:
            write.set_judgement(engine, [r["id"] for r in members], "failed", "system",
                                f"fresh re-scoring: the hardened weights of '{link.name}' could not be built")
            counts["failed on re-scoring"] += len(members)
            del systems[k]
    rows = [r for members in systems.values() for r in members]
    if not systems:
        return counts
    job = {"classes": _classes(registry, [r["match"] for r in rows]),
           "data": rows[0]["match"].data.model_dump(mode="json"),
           "systems": [_rescore_system(members, registry, hardened) for members in systems.values()]}
    for members, fresh in zip(systems.values(), ex.rescore(job)):
        ids = [r["id"] for r in members]
        if fresh.get("fault") or any(v is None for v in (*fresh["adv"].values(), *fresh["clean"].values())):
            write.set_judgement(engine, ids, "failed", "system", f"fresh re-scoring: {fresh['fault']}")
            counts["failed on re-scoring"] += len(ids)
            continue
        gaps = {r["id"]: warm_gap(r["scores"], fresh["adv"][r["key"]], fresh["clean"][r["seed"]])
                for r in members}
        worst = max(gaps, key=gaps.get)
        if gaps[worst] > STATEFUL_TOLERANCE_DB:
            label = next(r["match"].label() for r in members if r["id"] == worst)
            write.set_judgement(engine, ids, "disqualified", "system",
                                f"stateful: a fresh system in a fresh process scores {label} "
                                f"{gaps[worst]:.3g} dB differently from the warm worker (tolerance "
                                f"{STATEFUL_TOLERANCE_DB} dB)", gap=gaps[worst])
            counts["disqualified on re-scoring"] += len(ids)
            continue
        for r in members:
            a, c = fresh["adv"][r["key"]], fresh["clean"][r["seed"]]
            pick = lambda d, k, i: None if d.get(k) is None else d[k][i]  # noqa: E731
            values = [{"adv_psnr": a["psnr"][i], "adv_ssim": a["ssim"][i],
                       "adv_psnr_mean": pick(a, "psnr_mean", i), "adv_psnr_worst": pick(a, "psnr_worst", i),
                       "adv_ssim_worst": pick(a, "ssim_worst", i),
                       "clean_psnr": c["psnr"][i], "clean_ssim": c["ssim"][i]} for i in range(len(r["scores"]))]
            write.set_verified(engine, r["id"], values, gaps[r["id"]])
    return counts


def _system_key(m: Match) -> tuple:
    return (m.restorer.model_dump_json(), tuple(d.model_dump_json() for d in m.defense), m.data.model_dump_json())


def _classes(registry: Registry, matches: list[Match]) -> dict[tuple[str, str], type]:
    out = {}
    for m in matches:
        out[("restorer", m.restorer.name)] = registry.get("restorer", m.restorer.name).cls
        out |= {("defense", d.name): registry.get("defense", d.name).cls for d in m.defense}
    return out


def _rescore_system(members: list[dict[str, Any]], registry: Registry, hardened: dict[str, str]) -> dict[str, Any]:
    m = members[0]["match"]
    link = hardening_link(m, registry)
    return {"restorer": m.restorer.model_dump(mode="json"),
            "defense": [d.model_dump(mode="json") for d in m.defense],
            "weights": hardened[hardened_key(m.restorer, link, m, registry)] if link is not None else None,
            "entries": [{"key": r["key"], "seed": r["seed"], "adv": r["adv"]} for r in members]}


def _postfix(counts: Counter, running: int) -> dict[str, int]:
    return {"done": counts["done"], "failed": counts["failed"], "dq": counts["disqualified"],
            "skipped": counts["skipped"],
            "running": running}


def _executor(name: str, t: Tournament, address: str | None, device: str | None, registry):
    from arena.run.executors import LocalExecutor, RayExecutor

    if name == "local":
        return LocalExecutor(t, device, registry)
    if name == "ray":
        return RayExecutor(t, address)
    raise ValueError(f"unknown executor '{name}' (allowed: ray, local)")
