"""RayExecutor's scheduling rules, driven through cases a real cluster cannot stage on demand
(a replacement worker that is never placed, a source match that dies): ``ray`` is replaced by a
deterministic stand-in with a simulated clock. Real Ray runs the same executor in test_ray.py,
test_share.py, test_cluster.py and test_multinode.py."""

from __future__ import annotations

import itertools
import types

import pytest

import arena.run.executors as executors


class RayError(Exception):
    pass


class RayActorError(RayError):
    pass


class Ref:
    ids = itertools.count()

    def __init__(self, done_at, value=None, exc=None):
        self.id, self.done_at, self.value, self.exc = next(Ref.ids), done_at, value, exc

    def __hash__(self):
        return self.id


class FakeRay:
    """``wait`` moves the clock to the next answer (or by its timeout); ``get`` gives it."""

    exceptions = types.SimpleNamespace(RayActorError=RayActorError, RayError=RayError)

    def __init__(self):
        self.now, self.submitted = 0.0, []

    def put(self, x):
        return x

    def wait(self, refs, num_returns=1, timeout=None):
        if self.now > 10_000:
            raise AssertionError("the executor is still waiting after 10,000 simulated seconds")
        done = [r for r in refs if r.done_at is not None and r.done_at <= self.now]
        if not done:
            self.now += timeout or 1.0
        return [r for r in refs if r.done_at is not None and r.done_at <= self.now][:num_returns], []

    def get(self, ref):
        if ref.exc:
            raise ref.exc
        return ref.value

    def kill(self, actor, no_restart=True):
        pass

    def cancel(self, ref):
        pass


class Actor:
    def __init__(self, ray: FakeRay, placed: bool, dies: set):
        self.ray, self.dies = ray, dies
        self.ready = types.SimpleNamespace(remote=lambda: Ref(ray.now + 0.5 if placed else None, True))
        self.run = types.SimpleNamespace(remote=self._run)

    def _run(self, spec, given):
        key = spec["key"]
        self.ray.submitted.append((self.ray.now, key, given is not None))
        if key in self.dies:
            self.dies.discard(key)  # once
            return Ref(self.ray.now + 1.0, exc=RayActorError("the actor's node is gone"))
        return Ref(self.ray.now + 2.0, {"key": key, "status": "done"})


class M:
    def __init__(self, key, defense):
        self.key, self.defense_label = key, defense
        self.restorer = types.SimpleNamespace(model_dump_json=lambda: "unet")

    def model_dump(self, mode=None):
        return {"key": self.key}


def run(monkeypatch, matches, after=None, workers=2, placed=lambda i: True, dies=(), timeout_s=30.0,
        size=None):
    """``size(now)``: how many workers the cluster fits at that simulated time (default ``workers``)."""
    ray = FakeRay()
    monkeypatch.setattr(executors, "time", types.SimpleNamespace(monotonic=lambda: ray.now))
    monkeypatch.setattr(executors, "failed", lambda m, reason, attempts=1, error=None:
                        {"key": m.key, "status": "failed", "reason": reason})
    ex = object.__new__(executors.RayExecutor)
    ex.t = types.SimpleNamespace(timeout_s=timeout_s, max_retries=1, num_cpus=1, num_gpus=0,
                                 workers=workers, samples_per_match=0)
    ex.ray, ex._owns_ray = ray, False
    ex.n_workers = lambda n: min(size(ray.now) if size else workers, n)
    count, dying = itertools.count(), set(dies)
    ex._actor = lambda data, hardened: Actor(ray, placed(next(count)), dying)
    ray.actors = count
    results, given = {}, {}

    def on_result(m, r):
        assert m.key not in results, f"{m.key} has two outcomes"
        results[m.key] = r
        for k, source in (after or {}).items():
            if source == m.key and r["status"] == "done":
                given[k] = {"from": m.key}

    ex.run(matches, None, {}, on_result, given=given, after=after)
    return results, ray


S, D1, D2, X = M("S", "none"), M("D1", "jpeg"), M("D2", "noise"), M("X", "median")
AFTER = {"D1": "S", "D2": "S"}


def test_matches_that_reuse_a_batch_start_after_their_source_and_receive_it(monkeypatch):
    results, ray = run(monkeypatch, [S, X, D1, D2], AFTER)
    assert {k: r["status"] for k, r in results.items()} == dict.fromkeys("S X D1 D2".split(), "done")
    when = {key: (t, got) for t, key, got in ray.submitted}
    finished_s = when["S"][0] + 2.0
    assert when["D1"][0] >= finished_s and when["D2"][0] >= finished_s
    assert when["D1"][1] and when["D2"][1] and not when["S"][1]


def test_a_source_whose_worker_died_is_retried_and_still_feeds_the_others(monkeypatch):
    results, ray = run(monkeypatch, [S, D1, D2], AFTER, dies={"S"})
    assert all(r["status"] == "done" for r in results.values()) and len(results) == 3
    assert [key for _, key, _ in ray.submitted].count("S") == 2
    assert all(got for _, key, got in ray.submitted if key != "S")


@pytest.mark.parametrize("after", [None, AFTER])
def test_a_run_whose_only_worker_cannot_be_replaced_ends_within_timeout_s(monkeypatch, after):
    # one worker: its node is lost mid-match and the replacement is never placed. Before, the
    # executor waited for it forever; now what is left fails, saying why, after timeout_s
    results, ray = run(monkeypatch, [S, D1, D2], after, workers=1, placed=lambda i: i == 0, dies={"S"},
                       timeout_s=30.0)
    assert set(results) == {"S", "D1", "D2"}
    assert all(r["status"] == "failed" and "could be placed within timeout_s (30 s)" in r["reason"]
               for r in results.values())
    assert ray.now < 40


def test_a_node_that_joins_mid_run_gets_workers_and_shortens_the_run(monkeypatch):
    # the cluster fits one worker until t = 6, then three (a node joined); ten 2-second matches
    matches = [M(f"m{i}", "none") for i in range(10)]
    results, ray = run(monkeypatch, matches, workers=1, size=lambda now: 1 if now < 6 else 3)
    assert all(r["status"] == "done" for r in results.values()) and len(results) == 10
    assert next(ray.actors) == 3  # two more workers started: none before the node joined, none beyond it
    starts = sorted(t for t, _, _ in ray.submitted)
    assert sum(t < 6 for t in starts) <= 3 and ray.now < 15  # one worker alone would take 20 s
