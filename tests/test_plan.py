import pytest

from arena.api import ConfigError
from arena.plan import parse_config, plan
from helpers import SMALL, config, registry_with, Cheat


def test_plan_counts_every_combination(arena_registry):
    t = config(threat_models=["oblivious", "adaptive"],
               budgets=[{"eps": "4/255"}, {"eps": "8/255"}])
    matches = plan(t, arena_registry)
    assert len(matches) == 2 * 2 * 2 * 2 * 2  # threat x budget x restorer x defense x attack
    assert len({m.key for m in matches}) == len(matches)
    assert all(m.status == "planned" for m in matches)


def test_keys_are_stable_and_defaults_normalised(arena_registry):
    a = plan(config(attacks=[{"name": "pgd"}]), arena_registry)
    b = plan(config(attacks=[{"name": "pgd", "step": 2.5, "restarts": 1}]), arena_registry)
    assert [m.key for m in a] == [m.key for m in b]
    c = plan(config(attacks=[{"name": "pgd", "restarts": 2}]), arena_registry)
    assert {m.key for m in a}.isdisjoint(m.key for m in c)


@pytest.mark.parametrize("change, words", [
    ({"attacks": ["nosuch"]}, ["unknown attack 'nosuch'", "fgsm", "pgd"]),
    ({"attacks": [{"name": "pgd", "stepz": 1}]}, ["attack 'pgd'", "unknown parameter 'stepz'"]),
    ({"attacks": [{"name": "pgd", "restarts": 0}]}, ["attack 'pgd'", "'restarts'", "greater than or equal to 1"]),
    ({"defenses": [{"name": "jpeg", "quality": 120}]}, ["defense 'jpeg'", "'quality'", "less than or equal to 95"]),
    ({"budgets": [{"eps": "8/0"}]}, ["eps", "fraction"]),
    ({"budgets": [{"norm": "l3"}]}, ["norm", "'linf' or 'l2'"]),
    ({"restorers": []}, ["restorers", "at least one"]),
    ({"colour": "red"}, ["colour", "unknown parameter"]),
    ({"data": {"name": "poled", "split": "val", "root": "."}}, ["split 'val'", "embedded", "train or test"]),
    ({"defenses": [{"name": "jpeg>none", "quality": 3}]}, ["chain", "quality", "tables named after its links"]),
])
def test_bad_config_is_one_line_naming_what_is_wrong(arena_registry, change, words):
    with pytest.raises(ConfigError) as err:
        plan(parse_config({**SMALL, **change}), arena_registry)
    msg = str(err.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_chain_parameters_per_link(arena_registry):
    t = config(defenses=[{"name": "jpeg>none", "jpeg": {"quality": 30}}])
    (m, *_) = plan(t, arena_registry)
    assert [s.name for s in m.defense] == ["jpeg", "none"]
    assert m.defense[0].params == {"quality": 30}
    assert m.defense_label == "jpeg>none"


def test_capability_pruning_skips_with_reason():
    from arena.api import Restorer
    from arena.testing import TinyNet

    class NeedsPSF(Restorer):
        """Needs a PSF (test fixture)."""
        name = "needspsf"
        needs_psf = True

        def build(self):
            return TinyNet()

    registry = registry_with(NeedsPSF, role="restorer")
    t = config(restorers=["identity", "needspsf"], data={"name": "poled", "root": "/nowhere"})
    matches = plan(t, registry)
    skipped = [m for m in matches if m.status == "skipped"]
    assert len(skipped) == len(matches) // 2
    assert all("needs a PSF" in m.reason and "poled" in m.reason for m in skipped)


def test_registry_rejects_duplicates_and_bad_classes():
    from arena.plugins import PluginError

    with pytest.raises(PluginError, match="registered twice"):
        registry_with(Cheat, Cheat)

    class NotAnAttack:
        name = "x"

    with pytest.raises(PluginError, match="not a subclass of arena.api.Attack"):
        registry_with(NotAnAttack)


def test_unavailable_component_becomes_skipped_matches():
    from types import ModuleType

    from arena.api import Attack
    from arena.hookspecs import hookimpl
    from arena.plugins import load_registry

    class Missing(Attack):
        """Needs a package that is not installed (test fixture)."""
        name = "missing"

    mod = ModuleType("missing_plugin")
    mod.register_attacks = hookimpl(
        lambda register: register(Missing, unavailable="the 'x' package is not installed"))
    matches = plan(config(attacks=["fgsm", "missing"]), load_registry(modules=(mod,)))
    skipped = [m for m in matches if m.status == "skipped"]
    assert len(skipped) == len(matches) // 2
    assert {m.reason for m in skipped} == {"attack 'missing' is unavailable: the 'x' package is not installed"}


def test_several_seeds_plan_one_match_each(arena_registry):
    matches = plan(config(seeds=[0, 1, 2]), arena_registry)
    assert len(matches) == 8 * 3 and {m.seed for m in matches} == {0, 1, 2}
    assert len({m.key for m in matches}) == len(matches)


def test_the_val_split_is_held_out_photographs_a_tournament_can_run_on(tmp_path, arena_registry):
    """Settings (a suite's iterations) are chosen on "val", never by reading the test split."""
    from arena.data import load_data
    from arena.run.driver import run_tournament
    from arena.store import views
    from arena.store.db import open_reader

    val = load_data("embedded", "val", images=4, size=16)
    test = load_data("embedded", "test", images=4, size=16)
    photo = lambda ids: {i.split("-")[0] for i in ids}  # noqa: E731
    assert photo(val.ids).isdisjoint(photo(test.ids))
    t = parse_config({**SMALL, "data": {**SMALL["data"], "split": "val"},
                      "restorers": ["identity"], "defenses": ["none"], "attacks": ["fgsm"]})
    db = str(tmp_path / "v.db")
    run_tournament(t, db, executor="local", progress=False, registry=arena_registry)
    rows = views.leaderboard(open_reader(db))
    assert len(rows) == 1 and rows[0]["robust_psnr"] is not None
