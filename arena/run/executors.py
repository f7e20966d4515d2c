"""Executors: in-process (one worker, for debugging and single-device checks) and Ray.

Both hand results to ``on_result`` in completion order; only the driver writes them.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    from arena.data import UDCData
    from arena.plan import Match, Tournament

OnResult = Callable[["Match", dict[str, Any]], None]


class ExecutorError(RuntimeError):
    """The executor cannot run this tournament as configured."""


def failed(match: Match, reason: str, attempts: int = 1) -> dict[str, Any]:
    return {"key": match.key, "status": "failed", "reason": reason, "error": reason,
            "scores": [], "samples": [], "timings": {}, "trace": [], "start_grad": None,
            "gradient_calls": 0, "peak_mem_mb": None, "device": None,
            "defense_ms_per_mp": None, "attempts": attempts}


class LocalExecutor:
    """Runs matches one after another in this process (timeouts are not enforced here)."""

    name = "local"

    def __init__(self, t: Tournament, device: str | None = None, registry=None):
        self.t, self.device, self.registry = t, device, registry

    def harden(self, jobs: list[tuple]) -> dict[str, str]:
        from arena.run.harden import build_hardened

        return {job[0]: build_hardened(*job, device=self.device, registry=self.registry) for job in jobs}

    def run(self, matches: list[Match], data: UDCData, hardened: dict[str, str],
            on_result: OnResult, on_start: Callable[[Match], None] | None = None) -> None:
        from arena.run.worker import Worker

        worker = Worker(data, hardened, device=self.device, samples=self.t.samples_per_match,
                        registry=self.registry)
        for match in matches:
            if on_start:
                on_start(match)
            on_result(match, dict(worker.run(match), attempts=1))

    def close(self) -> None:
        pass


class RayExecutor:
    """Warm worker actors, bounded in-flight work, completion order, per-match timeouts.

    Matches of the same restorer and defense go to the same actor where possible, so its models
    and clean restorations stay warm. An actor that dies is restarted by Ray and its call retried
    (``max_retries``); a match still failing, or past ``timeout_s``, is recorded as failed.
    """

    name = "ray"

    def __init__(self, t: Tournament, address: str | None = None):
        import ray

        self.t, self.ray = t, ray
        self._owns_ray = not ray.is_initialized()  # leave a cluster we joined as we found it
        if self._owns_ray:
            ray.init(address=address, include_dashboard=False, log_to_driver=True,
                     configure_logging=False)
        self._check_resources()

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

    def harden(self, jobs: list[tuple]) -> dict[str, str]:
        from arena.run.harden import build_hardened

        task = self.ray.remote(num_cpus=self.t.num_cpus, num_gpus=self.t.num_gpus)(build_hardened)
        refs = {job[0]: task.remote(*job) for job in jobs}
        return {k: self.ray.get(r) for k, r in refs.items()}

    def _actor(self, data_ref, hardened):
        from arena.run.worker import Worker

        cls = self.ray.remote(
            num_cpus=self.t.num_cpus, num_gpus=self.t.num_gpus,
            max_restarts=self.t.max_retries, max_task_retries=self.t.max_retries,
        )(Worker)
        return cls.remote(data_ref, hardened, threads=self.t.num_cpus, samples=self.t.samples_per_match)

    def run(self, matches: list[Match], data: UDCData, hardened: dict[str, str],
            on_result: OnResult, on_start: Callable[[Match], None] | None = None) -> None:
        ray = self.ray
        if not matches:
            return
        data_ref = ray.put(data)  # one copy in the object store, shared by every actor
        groups: dict[tuple, deque[Match]] = defaultdict(deque)
        for m in matches:
            groups[(m.restorer.model_dump_json(), m.defense_label)].append(m)
        actors = [self._actor(data_ref, hardened) for _ in range(self.n_workers(len(matches)))]
        last_group: dict[int, tuple | None] = {i: None for i in range(len(actors))}
        inflight: dict[Any, tuple[int, Match, float]] = {}

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
            m = next_match(i)
            if m is None:
                return
            if on_start:
                on_start(m)
            inflight[actors[i].run.remote(m.model_dump(mode="json"))] = (i, m, time.monotonic())

        try:
            for i in range(len(actors)):
                submit(i)
            while inflight:
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
                for ref in ready:
                    i, m, _t0 = inflight.pop(ref)
                    try:
                        result = dict(ray.get(ref), attempts=1)
                    except ray.exceptions.RayActorError as exc:
                        result = failed(m, f"worker died {self.t.max_retries + 1} time(s): "
                                           f"{str(exc).splitlines()[0]}", self.t.max_retries + 1)
                        actors[i] = self._actor(data_ref, hardened)
                        last_group[i] = None
                    except ray.exceptions.RayError as exc:
                        result = failed(m, f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
                    on_result(m, result)
                    submit(i)
                now = time.monotonic()
                for ref, (i, m, t0) in list(inflight.items()):
                    if now - t0 > self.t.timeout_s:
                        inflight.pop(ref)
                        ray.kill(actors[i], no_restart=True)
                        on_result(m, failed(m, f"timed out after {self.t.timeout_s:g} s"))
                        actors[i] = self._actor(data_ref, hardened)
                        last_group[i] = None
                        submit(i)
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
