"""Executors: in-process (one worker, for debugging and single-device checks) and Ray.

Both hand results to ``on_result`` in completion order; only the driver writes them.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import time
from collections import Counter, defaultdict, deque
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable

from arena.display import strip_ansi  # Ray colours its error messages
from arena.errors import ArenaError
from arena.match import failed_result as failed

if TYPE_CHECKING:  # pragma: no cover
    from arena.data import UDCData
    from arena.plan import Match, Tournament

OnResult = Callable[["Match", dict[str, Any]], None]


class ExecutorError(ArenaError, RuntimeError):
    """The executor cannot run this tournament as configured."""


def rescore_timeout(t: Tournament, job: dict[str, Any]) -> float:
    """Re-scoring is a forward pass per batch, far below a match; the process start (imports)
    gets two minutes of its own."""
    return 120 + t.timeout_s * max(1, len(job["systems"]))


def _all_fail(job: dict[str, Any], why: str) -> list[dict[str, Any]]:
    return [{"adv": {}, "clean": {}, "fault": why} for _ in job["systems"]]


def rescore_in_subprocess(job: dict[str, Any], timeout_s: float) -> list[dict[str, Any]]:
    """Re-score one system in a new Python interpreter (not a fork: nothing of this process's
    memory comes along), with this process's import path so in-process plugins are found."""
    import pickle
    import subprocess
    import sys

    import cloudpickle

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    try:
        done = subprocess.run([sys.executable, "-m", "arena.run.rescore_child"], input=cloudpickle.dumps(job),
                              capture_output=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return _all_fail(job, f"re-scoring timed out after {timeout_s:g} s")
    if done.returncode != 0:
        tail = strip_ansi(done.stderr.decode(errors="replace")).strip().splitlines()[-1:] or ["no output"]
        return _all_fail(job, f"re-scoring process failed: {tail[0]}")
    return pickle.loads(done.stdout)


def rescore_payload(job: bytes) -> list[dict[str, Any]]:
    """Run in a fresh process: ``job`` arrives cloudpickled so that plugin classes defined in
    the driver (tests, notebooks) travel by value."""
    import cloudpickle

    from arena.run.worker import rescore_systems

    return rescore_systems(cloudpickle.loads(job))


class LocalExecutor:
    """Runs matches one after another in this process; ``timeout_s`` is enforced with an alarm
    (main thread only), and re-scoring runs in a fresh spawned process per system."""

    name = "local"

    def __init__(self, t: Tournament, device: str | None = None, registry=None):
        self.t, self.device, self.registry = t, device, registry
        self._worker = None

    def rescore(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        return rescore_in_subprocess(dict(job, device=self.device), rescore_timeout(self.t, job))

    def harden(self, jobs: list[tuple]) -> dict[str, str]:
        """Build each job's weights under ``timeout_s``: a ``Hardened`` of the files built, whose
        ``failed`` keeps each job that raised or timed out (its matches fail, the others run)."""
        import traceback

        from arena.run.harden import Hardened, build_hardened, job_failed
        from arena.timeout import Timeout, deadline

        out = Hardened()
        for job in jobs:
            try:
                with deadline(self.t.timeout_s if self.t is not None else None, "hardening"):
                    out[job[0]] = build_hardened(*job, device=self.device, registry=self.registry)
            except Timeout:
                out.failed[job[0]] = job_failed(job, f"timed out after {self.t.timeout_s:g} s")
            except Exception as exc:  # noqa: BLE001 - a plugin's fault fails its own matches
                out.failed[job[0]] = job_failed(job, f"failed: {type(exc).__name__}: {exc}",
                                                traceback.format_exc())
        return out

    def run(self, matches: list[Match], data: UDCData, hardened: dict[str, str],
            on_result: OnResult, on_start: Callable[[Match], bool | None] | None = None,
            given: dict[str, dict] | None = None, after: dict[str, str] | None = None) -> None:
        """``given``: results of other matches to score instead of attacking, read when each
        match starts; ``after``: the match each waits for, met first here since matches run in
        the order given."""
        from arena.run.worker import Worker

        from arena.timeout import Timeout, deadline

        if self._worker is None or self._worker.data is not data:  # warm across calls of a run
            self._worker = Worker(data, hardened, device=self.device, samples=self.t.samples_per_match,
                                  registry=self.registry)
        worker = self._worker
        worker.hardened = hardened or {}
        for match in matches:
            if on_start and on_start(match) is False:  # claimed by another driver, or stored
                continue
            t0 = time.monotonic()
            try:
                with deadline(self.t.timeout_s, "match"):
                    result = dict(worker.run(match, (given or {}).get(match.key)), attempts=1)
            except Timeout as exc:
                result = failed(match, str(exc))
            if time.monotonic() - t0 > self.t.timeout_s and result["status"] != "failed":
                # it swallowed the alarm and finished late: late is still timed out
                result = failed(match, f"match timed out after {self.t.timeout_s:g} s")
            on_result(match, result)

    def close(self) -> None:
        pass


class RayExecutor:
    """Warm worker actors, bounded in-flight work, completion order, per-match timeouts.

    Matches of the same restorer and defense go to the same actor where possible, so its models
    and clean restorations stay warm. An actor gets work only once the cluster has placed it, so
    a run never waits on resources another job (or a lost node) holds while any of its workers
    can go on; when none is placed for ``timeout_s``, what is left fails, saying so. A match whose
    actor died (its node lost) is retried on the other actors, ``max_retries`` times; one still
    failing, or past ``timeout_s``, is recorded as failed.
    """

    name = "ray"

    def __init__(self, t: Tournament, address: str | None = None):
        import ray

        self.t, self.ray = t, ray
        self._owns_ray = not ray.is_initialized()  # leave a cluster we joined as we found it
        if self._owns_ray:
            connect_ray(ray, address)
        try:
            self._check_resources()
        except ExecutorError:
            self.close()
            raise

    def _check_resources(self) -> None:
        res = self.ray.cluster_resources()
        if self.t.num_gpus > 0 and res.get("GPU", 0) < self.t.num_gpus:
            raise ExecutorError(
                f"the config asks for {self.t.num_gpus:g} GPU(s) per match but the Ray cluster has "
                f"{res.get('GPU', 0):g}; set num_gpus = 0 to run on CPU"
            )
        if res.get("CPU", 0) < self.t.num_cpus:
            raise ExecutorError(
                f"the config asks for {self.t.num_cpus:g} CPU(s) per worker but the Ray cluster has "
                f"{res.get('CPU', 0):g}"
            )

    def n_workers(self, n_matches: int) -> int:
        res = self.ray.cluster_resources()
        n = int(res.get("CPU", 1) // self.t.num_cpus)
        if self.t.num_gpus > 0:
            n = min(n, int(res.get("GPU", 0) // self.t.num_gpus))
        if self.t.workers:
            n = min(n, self.t.workers) if n else self.t.workers
        return max(1, min(n, n_matches))

    def rescore(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        import cloudpickle

        blobs = getattr(self, "_blobs", {})  # hardened weights travel with the job (any node re-scores)
        job = dict(job, systems=[dict(s, weights=blobs.get(s["weights"], s["weights"])) for s in job["systems"]])
        # max_calls=1: the re-scoring gets a worker process of its own, which exits after it
        task = self.ray.remote(num_cpus=self.t.num_cpus, num_gpus=self.t.num_gpus, max_calls=1,
                               max_retries=self.t.max_retries)(rescore_payload)
        try:
            return self.ray.get(task.remote(cloudpickle.dumps(job)), timeout=rescore_timeout(self.t, job))
        except Exception as exc:  # noqa: BLE001 - a broken re-scoring fails every system in it
            return _all_fail(job, strip_ansi(f"re-scoring failed: {type(exc).__name__}: {_first_line(exc)}"))

    def harden(self, jobs: list[tuple]) -> dict[str, str]:
        """Build the jobs in parallel, as many at a time as workers fit, each under ``timeout_s``
        from its start: a ``Hardened``, whose ``failed`` keeps each job that raised, died or
        timed out."""
        from arena.run.harden import Hardened, build_portable, job_failed, materialise

        ray, out, waiting, inflight = self.ray, Hardened(), deque(jobs), {}
        # the file's bytes come back: the node that built it may not share our cache folder
        task = ray.remote(num_cpus=self.t.num_cpus, num_gpus=self.t.num_gpus)(build_portable)

        def submit() -> None:
            if waiting:
                job = waiting.popleft()
                inflight[task.remote(*job)] = (job, time.monotonic())

        for _ in range(self.n_workers(len(jobs)) if jobs else 0):
            submit()
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            for ref in ready:
                job, _t0 = inflight.pop(ref)
                try:
                    blob = ray.get(ref)
                    out[job[0]], out.blobs[job[0]] = materialise(blob), blob
                    self._blobs = {**getattr(self, "_blobs", {}), out[job[0]]: blob}
                except ray.exceptions.RayError as exc:
                    cause = getattr(exc, "cause", None)  # what harden raised, as the local executor says it
                    why = f"{type(cause).__name__}: {cause}" if isinstance(cause, Exception) else _first_line(exc)
                    out.failed[job[0]] = job_failed(job, f"failed: {why}", strip_ansi(str(exc)))
                submit()
            for ref, (job, t0) in list(inflight.items()):
                if time.monotonic() - t0 > self.t.timeout_s:
                    inflight.pop(ref)
                    ray.cancel(ref, force=True)  # kills the worker process running it
                    out.failed[job[0]] = job_failed(job, f"timed out after {self.t.timeout_s:g} s")
                    submit()
        return out

    def _actor(self, data_ref, hardened):
        from arena.run.worker import Worker

        # no restarts by Ray: a restarted actor waits for the resources of a node that may be
        # gone. The executor retries a dead actor's match on the others and starts a new actor,
        # which gets work only once it is placed (its ``ready`` call answered).
        cls = self.ray.remote(num_cpus=self.t.num_cpus, num_gpus=self.t.num_gpus, max_restarts=0)(Worker)
        return cls.remote(data_ref, hardened, threads=self.t.num_cpus, samples=self.t.samples_per_match)

    def run(self, matches: list[Match], data: UDCData, hardened: dict[str, str],
            on_result: OnResult, on_start: Callable[[Match], bool | None] | None = None,
            given: dict[str, dict] | None = None, after: dict[str, str] | None = None) -> None:
        """``given``: results of other matches to score instead of attacking, read when each
        match is submitted; ``after``: {match key: the key of the match it waits for}, held back
        until that one has an outcome (any: without a result in ``given`` it attacks itself)."""
        ray = self.ray
        if not matches:
            return
        data_ref = ray.put(data)  # one copy in the object store, shared by every actor
        hardened = ray.put(hardened)  # with the weights' bytes, for nodes without the files
        groups: dict[tuple, deque[Match]] = defaultdict(deque)
        held: dict[str, list[Match]] = defaultdict(list)  # per source key, the matches waiting on it
        here = {m.key for m in matches}
        for m in matches:
            source = (after or {}).get(m.key)
            if source in here:
                held[source].append(m)
            else:
                groups[_group(m)].append(m)

        def release(key: str) -> None:  # ``key`` has an outcome: what waited on it may start
            for m in held.pop(key, []):
                groups[_group(m)].append(m)

        actors: list[Any] = []
        last_group: dict[int, tuple | None] = {}
        inflight: dict[Any, tuple[int, Match | None, float]] = {}  # a match's call, or an actor's ready call
        deaths: Counter = Counter()  # per match key, the workers that died running it
        unplaced = ["no Ray worker could be placed on the cluster"]  # why work is left, if it is

        def start_actor(i: int | None = None) -> None:
            actor = self._actor(data_ref, hardened)
            if i is None:
                i = len(actors)
                actors.append(actor)
            else:
                actors[i] = actor
            last_group[i] = None
            idle.discard(i)
            inflight[actor.ready.remote()] = (i, None, time.monotonic())

        def next_match(i: int) -> Match | None:
            g = last_group[i]
            if g not in groups or not groups[g]:
                # prefer a group no other actor is working on, then the largest
                busy = {last_group[j] for j in last_group if j != i}
                free = [k for k in groups if groups[k] and k not in busy]
                pool = free or [k for k in groups if groups[k]]
                if not pool:
                    return None
                g = max(pool, key=lambda k: len(groups[k]))
                last_group[i] = g
            return groups[g].popleft()

        def submit(i: int) -> None:
            while True:
                m = next_match(i)
                if m is None:
                    return
                if on_start is None or on_start(m) is not False:  # False: another driver's, or stored
                    break
                release(m.key)
            inflight[actors[i].run.remote(m.model_dump(mode="json"), (given or {}).get(m.key))] = (i, m, time.monotonic())

        idle: set[int] = set()  # placed actors that found nothing to do (their work was held)

        def working(i: int) -> bool:
            return any(j == i and m is not None for j, m, _ in inflight.values())

        def offer(i: int) -> None:  # a placed actor asks for work; without any it waits idle
            submit(i)
            (idle.discard if working(i) else idle.add)(i)

        def busy() -> bool:  # a match is running, or one waits and some actor is placed or coming
            return any(m is not None for _, m, _ in inflight.values()) or (
                (any(groups.values()) or bool(held)) and bool(inflight or idle))

        def stalled() -> bool:  # nothing runs or can: every worker asked for has waited past timeout_s
            now = time.monotonic()
            return not idle and all(m is None and now - t0 > self.t.timeout_s for _, m, t0 in inflight.values())

        grown = [time.monotonic()]

        def grow() -> None:  # nodes that joined since the start get workers too
            if time.monotonic() - grown[0] < GROW_EVERY_S or idle:
                return
            grown[0] = time.monotonic()
            if any(m is None for _, m, _ in inflight.values()):  # a worker asked for is not placed yet
                return
            waiting = sum(len(g) for g in groups.values())
            for _ in range(self.n_workers(len(actors) + waiting) - len(actors) if waiting else 0):
                start_actor()

        try:
            for _ in range(self.n_workers(len(matches))):
                start_actor()
            while busy() and inflight:
                if stalled():
                    unplaced[0] = (f"no Ray worker could be placed within timeout_s ({self.t.timeout_s:g} s): "
                                   "the cluster's resources are held by other work or its nodes are gone")
                    break
                grow()
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
                for ref in ready:
                    i, m, _t0 = inflight.pop(ref)
                    if m is None:  # an actor is placed: give it work
                        try:
                            ray.get(ref)
                        except ray.exceptions.RayError as exc:  # it could not start: the slot stays empty
                            unplaced[0] = f"a Ray worker could not start: {_first_line(exc)}"
                            continue
                        offer(i)
                        continue
                    try:
                        result = dict(ray.get(ref), attempts=deaths[m.key] + 1)
                    except ray.exceptions.RayActorError as exc:
                        deaths[m.key] += 1
                        start_actor(i)  # its node may be gone: placed elsewhere, or never
                        if deaths[m.key] <= self.t.max_retries:
                            groups[_group(m)].appendleft(m)
                            continue
                        result = failed(m, f"worker died {deaths[m.key]} time(s): {_first_line(exc)}",
                                        deaths[m.key], error=str(exc))
                        on_result(m, result)
                        release(m.key)
                        continue
                    except ray.exceptions.RayError as exc:
                        result = failed(m, f"{type(exc).__name__}: {_first_line(exc)}", error=str(exc))
                    on_result(m, result)
                    release(m.key)
                    offer(i)
                now = time.monotonic()
                for ref, (i, m, t0) in list(inflight.items()):
                    if m is not None and now - t0 > self.t.timeout_s:
                        inflight.pop(ref)
                        ray.kill(actors[i], no_restart=True)
                        on_result(m, failed(m, f"timed out after {self.t.timeout_s:g} s"))
                        release(m.key)
                        start_actor(i)
                for j in list(idle):  # work released since they asked
                    offer(j)
            for key in list(held):  # their sources never ran here: they fail with the rest below
                release(key)
            for g in groups.values():  # no actor could ever be placed for these
                while g:
                    m = g.popleft()
                    if on_start is None or on_start(m) is not False:
                        on_result(m, failed(m, unplaced[0]))
        except KeyboardInterrupt:
            for ref in inflight:  # queued calls are dropped; running ones die with their actor below
                ray.cancel(ref)
            raise
        finally:
            for a in actors:
                ray.kill(a, no_restart=True)

    def close(self) -> None:
        if self._owns_ray and self.ray.is_initialized():
            self.ray.shutdown()


#: Seconds between two looks at the cluster's size while matches wait (a node that joins mid-run
#: gets workers at the next look).
GROW_EVERY_S = 2.0


def _group(m: Match) -> tuple[str, str]:
    """Matches of one system go to the same actor where possible: its models stay warm."""
    return m.restorer.model_dump_json(), m.defense_label


#: Seconds to wait for a TCP answer from ``--address`` before calling the cluster unreachable
#: (Ray itself retries a dead address for minutes).
PROBE_TIMEOUT_S = 5.0
#: Ports Ray listens on when an address names none: the GCS, and the Ray Client server.
DEFAULT_PORTS = {"": 6379, "ray://": 10001}


def connect_ray(ray, address: str | None) -> None:
    """Start a private local Ray instance (no address: never the cluster of the machine's last
    ``ray start`` or ``RAY_ADDRESS``) or join ``address``, failing in seconds, in one line."""
    if address not in (None, "", "local", "auto"):
        probe_address(address)
    try:
        with neutral_cwd():
            ray.init(address=address or "local", include_dashboard=False, log_to_driver=True,
                     configure_logging=False)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        where = f"at {address!r}" if address else "locally"
        raise ExecutorError(f"cannot start or reach a Ray cluster {where}: {_first_line(exc)}") from None


def probe_address(address: str) -> None:
    """Fail at once, naming the address, unless something answers on its host and port."""
    scheme = "ray://" if address.startswith("ray://") else ""
    hostport = address[len(scheme):].split("/", 1)[0]
    host, sep, port = hostport.rpartition(":")
    if not sep:
        host, port = hostport, str(DEFAULT_PORTS[scheme])
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S).close()
    except ValueError:
        raise ExecutorError(f"--address {address!r} is not HOST:PORT, ray://HOST:PORT or 'auto'") from None
    except OSError as exc:
        raise ExecutorError(f"no Ray cluster at {address!r}: "
                            f"{exc.strerror or type(exc).__name__} ({host}:{port})") from None


def _first_line(exc: BaseException) -> str:
    """The line of a Ray error that says what went wrong (the exception, not Ray's preamble)."""
    lines = [strip_ansi(x).strip() for x in str(exc).splitlines() if x.strip()]
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b", line):
            return line
    return lines[0] if lines else type(exc).__name__


@contextmanager
def neutral_cwd():
    """Ray puts the driver's working folder on every worker's sys.path; start it from an empty
    folder so that a checkout or stray module where `arena run` was typed is never imported."""
    old = os.getcwd()
    os.chdir(tempfile.mkdtemp(prefix="arena-ray-"))  # kept: local workers start in it
    try:
        yield
    finally:
        os.chdir(old)
