"""Hardened weights are an artifact: built once per (restorer, defense, data, seed), cached."""

import torch

from arena.api import Defense, Field, Params
from arena.plugins import load_registry
from arena.run.driver import run_tournament
from arena.store import views
from arena.store.db import open_reader
from helpers import config, module_with

CALLS = []


class Shrink(Defense):
    """Scales the restorer's last layer (a stand-in for fine-tuning, counting its builds)."""

    name = "shrink"
    hardens = True

    class Params(Params):
        factor: float = Field(0.5, gt=0, le=1)

    def harden(self, restorer, model, data, generator):
        CALLS.append((restorer.name, len(data)))
        state = {k: v.clone() for k, v in model.state_dict().items()}
        last = [k for k in state if k.endswith("weight")][-1]
        state[last] *= self.params.factor
        return state


def test_hardened_weights_built_once_and_used_by_every_match(tmp_path):
    CALLS.clear()
    registry = load_registry(modules=(module_with(Shrink, role="defense"),))
    t = config(restorers=["tiny"], defenses=["none", "shrink", "jpeg>shrink"],
               threat_models=["oblivious", "adaptive"],
               budgets=[{"eps": "4/255", "steps": 2}, {"eps": "8/255", "steps": 2}])
    db = str(tmp_path / "h.db")
    report = run_tournament(t, db, executor="local", progress=False, registry=registry)
    assert report.counts == {"done": 2 * 2 * 3 * 2}
    assert len(CALLS) == 1 and CALLS[0][0] == "tiny" and CALLS[0][1] > 4  # trained on the train split
    rows = {r["defense"]: r for r in views.leaderboard(open_reader(db)) if r["threat"] == "oblivious"
            and r["eps"] < 0.02}
    assert rows["shrink"]["clean_psnr"] != rows["none"]["clean_psnr"]  # the hardened weights were used
    # a second tournament with other attacks reuses the cached artifact
    run_tournament(config(restorers=["tiny"], defenses=["shrink"], attacks=["pgd"],
                          budgets=[{"eps": "2/255", "steps": 2}]),
                   db, executor="local", progress=False, registry=registry)
    assert len(CALLS) == 1
