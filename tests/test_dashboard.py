"""The dashboard (every page, through Streamlit's AppTest), its queries and `arena report`.

One small real tournament is run once for the module, plus a tiny broken one (a disqualified
and a failed match), into the same database. The numbers the pages show are checked against
the store's queries and against a plain-Python recomputation from the raw score rows.
"""

from __future__ import annotations

import hashlib
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from arena.api import Attack
from arena.plugins import load_registry
from arena.run.driver import run_tournament
from arena.store import models, queries, views
from arena.store.db import open_reader, open_writer
from helpers import Boom, Cheat, config, module_with, require_tool

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")
PAGES = ["attacks", "matrix", "curves", "gallery", "runs"]


class SignNoise(Attack):
    """Random-sign noise at the full budget (a decision-free floor; test fixture)."""

    name = "signnoise"
    kind = "decision-free"

    def perturb(self, target, lq, hq, budget, generator):
        u = torch.rand(lq.shape, generator=generator, device=generator.device).to(lq.device)
        return self.project(lq + budget.eps * torch.sign(u - 0.5), lq, budget)


@pytest.fixture(scope="module")
def arena_db(tmp_path_factory):
    """(db path, id of the broken tournament, id of the main one); the main one ran last."""
    db = str(tmp_path_factory.mktemp("dash") / "arena.db")
    registry = load_registry(modules=(module_with(SignNoise, Cheat, Boom),))
    broken = run_tournament(
        config(name="broken", restorers=["identity"], defenses=["none"], attacks=["cheat", "boom", "fgsm"]),
        db, executor="local", progress=False, command="arena run broken.toml", registry=registry)
    main = run_tournament(
        config(threat_models=["oblivious", "adaptive"],
               budgets=[{"eps": "4/255", "steps": 2}, {"eps": "8/255", "steps": 2}],
               attacks=["fgsm", {"name": "pgd", "restarts": 1}, "signnoise"]),
        db, executor="local", progress=False, command="arena run small.toml", registry=registry)
    # one flag of a known text beside those the driver computed, to check it is shown as stored
    with open_writer(db).begin() as conn:
        conn.execute(models.flags.insert().values(
            threat="oblivious", norm="linf", eps=8 / 255, restorer="tiny", defense="jpeg",
            attack="pgd", flag="test-only", reason="stored by the dashboard test"))
    return db, broken.tournament_id, main.tournament_id


@pytest.fixture
def app(arena_db, monkeypatch):
    monkeypatch.setenv("ARENA_DB", arena_db[0])
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def reference_leaderboard(db: str, tid: int, kinds=None) -> dict[tuple, dict[str, float]]:
    """Robust PSNR recomputed in plain Python from the raw rows: per image, the worst
    adversarial PSNR over the counted attacks; then the mean over images."""
    con = sqlite3.connect(db)
    rows = con.execute(
        "select m.threat, m.norm, m.eps, m.restorer, m.defense, m.attack_kind, s.image, "
        "s.clean_psnr, s.adv_psnr from scores s join matches m on s.match_id = m.id "
        "join tournament_matches t on t.match_id = m.id "
        "where m.status = 'done' and t.tournament_id = ?", (tid,)).fetchall()
    con.close()
    worst: dict[tuple, float] = {}
    clean: dict[tuple, float] = {}
    for threat, norm, eps, restorer, defense, kind, image, c, a in rows:
        if kinds and kind not in kinds:
            continue
        k = (threat, norm, eps, restorer, defense, image)
        worst[k] = min(worst.get(k, math.inf), a)
        clean[k] = c
    out: dict[tuple, list] = {}
    for k, v in worst.items():
        out.setdefault(k[:5], []).append((clean[k], v))
    return {k: {"clean_psnr": sum(c for c, _ in v) / len(v), "robust_psnr": sum(a for _, a in v) / len(v),
                "n_images": len(v)} for k, v in out.items()}


def shown_leaderboards(at) -> list:
    """The per-budget leaderboard frames (the page's last frame is the reproduce table)."""
    return [df.value for df in at.dataframe if "robust_psnr" in df.value.columns]


def shown_rows(at) -> list[dict]:
    """Every leaderboard row on the page, with the threat model and ε of the heading above it."""
    rows, threat, eps = [], None, None
    for el in at.main:
        if el.type == "header":
            threat = el.value.split()[0]
        elif el.type == "subheader":
            eps = int(el.value.split("=")[1].split("/")[0]) / 255
        elif el.type == "dataframe" and "robust_psnr" in el.value.columns:
            rows += [dict(r, threat=threat, eps=eps) for r in el.value.to_dict("records")]
    return rows


def multiselect(at, label):
    return next(w for w in at.multiselect if w.label == label)


def test_views_leaderboard_agrees_with_a_plain_recomputation(arena_db):
    db, _, tid = arena_db
    board, ref = views.leaderboard(open_reader(db), tid), reference_leaderboard(db, tid)
    assert len(board) == 2 * 2 * 2 * 2  # threat x budget x restorer x defense
    assert {(r["threat"], r["norm"], r["eps"], r["restorer"], r["defense"]) for r in board} == set(ref)
    for r in board:
        want = ref[(r["threat"], r["norm"], r["eps"], r["restorer"], r["defense"])]
        assert r["robust_psnr"] == pytest.approx(want["robust_psnr"])
        assert r["clean_psnr"] == pytest.approx(want["clean_psnr"])
        assert r["n_images"] == want["n_images"] == 4
        assert r["robust_psnr"] < r["clean_psnr"]


def test_leaderboard_page_shows_every_budget_with_the_stored_numbers(app, arena_db):
    db, _, tid = arena_db
    assert app.session_state["tournament"] == tid  # the most recent tournament by default
    headers = [h.value for h in app.header]
    assert headers[:2] == ["Most robust system", "Per budget: clean, oblivious and adaptive"]
    assert [h for h in headers if "threat model" in h] == ["adaptive threat model", "oblivious threat model"]
    # the side-by-side tables per ε, then the full table of each threat model and ε
    assert [s.value for s in app.subheader] == ["linf ε=4/255", "linf ε=8/255"] * 3
    frames = shown_leaderboards(app)
    rows = views.leaderboard(open_reader(db), tid)
    assert len(frames) == 4
    shown = [r for df in frames for r in df.to_dict("records")]
    assert len(shown) == len(rows)
    for got, want in zip(shown, rows):
        for field in ("rank", "restorer", "defense", "worst_attack", "n_images", "n_seeds"):
            assert got[field] == want[field]
        for field in ("clean_psnr", "clean_ssim", "robust_psnr", "robust_ssim", "drop_psnr"):
            assert got[field] == pytest.approx(want[field])
        assert got["defense_s_per_mp"] == pytest.approx(want["defense_ms_per_mp"] / 1000)
    for df in frames:  # ranked by robust PSNR within each budget
        assert list(df["rank"]) == list(range(1, len(df) + 1))
        assert list(df["robust_psnr"]) == sorted(df["robust_psnr"], reverse=True)
    con = sqlite3.connect(db)
    stored = con.execute("select threat, eps, restorer, defense, attack, flag, reason from flags").fetchall()
    con.close()
    for got, row in zip(shown, rows):
        want = {f"{flag} ({attack}): {reason}" if attack else f"{flag}: {reason}"
                for threat, eps, restorer, defense, attack, flag, reason in stored
                if (threat, restorer, defense) == (row["threat"], row["restorer"], row["defense"])
                and eps == pytest.approx(row["eps"])}
        assert set(filter(None, got["flags"].split("; "))) == want
    assert any("test-only (pgd): stored by the dashboard test" in r["flags"] for r in shown)


def test_leaderboard_summary_and_side_by_side_tables(app, arena_db):
    db, _, tid = arena_db
    rows = views.leaderboard(open_reader(db), tid)
    summary = app.table[0].value
    assert list(summary.columns) == ["oblivious", "adaptive"]
    for threat in ("oblivious", "adaptive"):
        for eps, label in ((4 / 255, "linf ε=4/255"), (8 / 255, "linf ε=8/255")):
            (best,) = [r for r in rows if r["threat"] == threat and r["rank"] == 1 and r["eps"] == pytest.approx(eps)]
            assert summary.loc[label, threat] == f"{best['restorer']} + {best['defense']}: {best['robust_psnr']:.2f} dB"
    side = [df.value for df in app.dataframe if "gap" in df.value.columns]
    assert len(side) == 2
    for df in side:
        assert len(df) == 4 and list(df["rank"]) == [1, 2, 3, 4]
        for t in df.to_dict("records"):
            by = {r["threat"]: r for r in rows if (r["restorer"], r["defense"]) == (t["restorer"], t["defense"])
                  and r["eps"] == pytest.approx(8 / 255 if df is side[1] else 4 / 255)}
            assert t["oblivious"].split()[0] == f"{by['oblivious']['robust_psnr']:.2f}"
            assert t["adaptive"].split()[0] == f"{by['adaptive']['robust_psnr']:.2f}"
            assert t["gap"] == pytest.approx(by["oblivious"]["robust_psnr"] - by["adaptive"]["robust_psnr"])
            assert t["gallery"].startswith("gallery?threat=adaptive&eps=")
    # the stored test flag shows as a badge beside the oblivious number of tiny + jpeg at 8/255
    tiny = side[1].set_index(["restorer", "defense"]).loc[("tiny", "jpeg")]
    assert "⚠test" in tiny["oblivious"] and "⚠test" not in tiny["adaptive"]
    assert any("stored by the dashboard test" in md.value for md in app.markdown)


def test_attack_kind_filter_changes_which_attacks_count(app, arena_db):
    db, _, tid = arena_db
    everything = {(r["threat"], r["eps"], r["restorer"], r["defense"]): r for r in shown_rows(app)}
    multiselect(app, "Attack kind").set_value(["decision-free"]).run()
    assert not app.exception
    ref = reference_leaderboard(db, tid, kinds={"decision-free"})
    noise_only = shown_rows(app)
    assert len(noise_only) == len(everything) == 16
    for r in noise_only:
        key = (r["threat"], r["eps"], r["restorer"], r["defense"])
        assert r["worst_attack"] == "signnoise"
        assert r["n_attacks"] == 1
        (want,) = [v for k, v in ref.items()
                   if (k[0], k[3], k[4]) == (r["threat"], r["restorer"], r["defense"])
                   and k[2] == pytest.approx(r["eps"])]
        assert r["robust_psnr"] == pytest.approx(want["robust_psnr"])
        key = next(k for k in everything if k[0] == r["threat"] and k[1] == pytest.approx(r["eps"])
                   and k[2:] == (r["restorer"], r["defense"]))
        # fewer attacks can only make the worst case milder
        assert r["robust_psnr"] >= everything[key]["robust_psnr"] - 1e-9
    assert any(r["robust_psnr"] > everything[k]["robust_psnr"] + 1e-6
               for r in noise_only for k in everything
               if k[0] == r["threat"] and k[1] == pytest.approx(r["eps"]) and k[2:] == (r["restorer"], r["defense"]))
    # flags about attacks that no longer count are left out
    assert not any("(pgd)" in r["flags"] or "(fgsm)" in r["flags"] for r in noise_only)


def test_restorer_filter_hides_systems(app):
    multiselect(app, "Restorer").set_value(["tiny"]).run()
    shown = shown_rows(app)
    assert shown and {r["restorer"] for r in shown} == {"tiny"}
    assert {r["rank"] for r in shown} == {1, 2}


def test_reproduce_row_lists_the_matches_and_their_commands(app, arena_db):
    db, _, tid = arena_db
    table = app.dataframe[-1].value
    assert set(table["attack"]) == {"fgsm", "pgd", "signnoise"}
    for key, command in zip(table["key"], table["command"]):
        assert command == f"arena reproduce {key} --db {db}"
        assert views.match_detail(open_reader(db), key)["status"] == "done"
    assert "arena run small.toml" in [c.value for c in app.code]


def test_attacks_page_ranks_by_damage(app, arena_db):
    db, _, tid = arena_db
    app.switch_page("sections/attacks.py").run()
    assert not app.exception
    frames = [df.value for df in app.dataframe]
    ranking = views.attack_ranking(open_reader(db), tid)
    assert len(frames) == 4 and sum(len(f) for f in frames) == len(ranking) == 4 * 3
    for df in frames:
        assert list(df["damage_psnr"]) == sorted(df["damage_psnr"], reverse=True)
        assert df["worst_for"].sum() == 4  # every system has exactly one worst attack
    # damage recomputed from the raw rows: mean over images per system, then over systems
    con = sqlite3.connect(db)
    per_system = con.execute(
        "select m.restorer, m.defense, avg(s.clean_psnr - s.adv_psnr) from scores s "
        "join matches m on s.match_id = m.id where m.status = 'done' and m.threat = 'adaptive' "
        "and m.attack = 'pgd' and abs(m.eps - 8.0 / 255) < 1e-9 group by m.restorer, m.defense").fetchall()
    con.close()
    assert len(per_system) == 4
    pgd = frames[1][frames[1]["attack"] == "pgd"].iloc[0]
    assert pgd["damage_psnr"] == pytest.approx(sum(d for *_, d in per_system) / 4)
    assert pgd["gradient_calls"] > 1 and pgd["time_attack_s"] > 0


def test_matrix_page_facets_every_restorer_on_one_colour_scale(app, arena_db):
    import json

    db, _, tid = arena_db
    app.switch_page("sections/matrix.py").run()
    assert not app.exception
    budget = next(s for s in app.selectbox if s.label == "Threat model and budget")
    assert budget.value["threat"] == "oblivious" and budget.value["eps"] == pytest.approx(8 / 255)
    conn = open_reader(db)
    board = {(r["restorer"], r["defense"]): r for r in views.leaderboard(conn, tid, threat="oblivious")
             if r["eps"] == pytest.approx(8 / 255)}
    cells = {r: views.matrix(conn, tid, restorer=r, threat="oblivious", norm="linf", eps=8 / 255)
             for r in ("identity", "tiny")}
    tables = [df.value for df in app.dataframe]
    assert len(tables) == 2  # a table per restorer, in the panels' order
    for restorer, table in zip(("identity", "tiny"), tables):
        assert list(table.index) == ["clean", "fgsm", "pgd", "signnoise", "ALL"]
        assert list(table.columns) == ["none", "jpeg"]  # the undefended system first
        for defense in ("jpeg", "none"):
            assert table.loc["ALL", defense] == pytest.approx(board[(restorer, defense)]["robust_psnr"])
            assert table.loc["clean", defense] == pytest.approx(board[(restorer, defense)]["clean_psnr"])
            assert table.loc["ALL", defense] <= table[defense].drop(["ALL", "clean"]).min() + 1e-9
    (chart,) = app.get("vega_lite_chart")
    spec = json.loads(chart.proto.spec)
    assert spec["facet"]["column"]["field"] == "restorer"  # side by side, one chart

    def domain(spec):
        layer = spec["spec"]["layer"][0]
        return layer["encoding"]["color"]["scale"]["domain"]

    # one colour scale over both panels: the attacks that matter, noise floor and clean row out
    attacked = [c["robust_psnr"] for r in cells.values() for c in r if c["attack"] != "signnoise"]
    assert domain(spec) == pytest.approx([min(attacked), max(attacked)])
    app.toggle[0].set_value(False).run()
    everything = attacked + [c["robust_psnr"] for r in cells.values() for c in r] + \
        [b["clean_psnr"] for b in board.values()]
    assert domain(json.loads(app.get("vega_lite_chart")[0].proto.spec)) == pytest.approx(
        [min(everything), max(everything)])
    multiselect(app, "Restorers").set_value(["tiny"]).run()
    assert not app.exception and len(app.dataframe) == 1
    assert app.dataframe[0].value.loc["ALL", "jpeg"] == pytest.approx(board[("tiny", "jpeg")]["robust_psnr"])


def test_curves_page_has_both_threat_models(app):
    app.switch_page("sections/curves.py").run()
    assert not app.exception
    assert [s.value for s in app.subheader] == ["oblivious", "adaptive"]
    charts = app.get("vega_lite_chart")
    assert len(charts) == 3  # robust PSNR vs eps for both threat models, then vs iterations
    assert '"field": "eps_255"' in charts[0].proto.spec
    assert '"field": "iteration"' in charts[2].proto.spec
    assert [h.value for h in app.header] == ["PSNR vs attack iterations"]
    labels = [b.proto.label for b in app.get("download_button")]
    assert labels == ["These curves (CSV)", "These traces (CSV)"]  # their content: tests/test_browser.py


def test_gallery_page_shows_every_picture_with_psnr(app, arena_db):
    from arena.display import SAMPLE_KINDS, eps_label

    db, _, tid = arena_db
    app.switch_page("sections/gallery.py").run()
    assert not app.exception and not app.warning
    picked = {f: app.selectbox(key=f"gal-{f}").value for f in ("threat", "eps", "restorer", "defense", "attack", "seed")}
    (match,) = [m for m in views.gallery_matches(open_reader(db), tid)
                if (m["threat"], eps_label(m["eps"]), m["restorer"], m["defense"], m["attack"], str(m["seed"]))
                == tuple(picked.values())]
    image = app.selectbox(key="gal-image").value
    stored = views.gallery(open_reader(db), match["id"])
    assert image == stored[0]["image"] and len(app.selectbox(key="gal-image").options) == len(stored)
    captions = [p.proto.imgs[0].caption for p in app.get("image")]
    # every stored kind, the difference map, then one restored output per image of the match
    present = [k for k in SAMPLE_KINDS if k in stored[0]["paths"]]
    assert len(present) == 6 and len(captions) == len(present) + 1 + len(stored)
    score = next(s for s in queries.scores_of(open_reader(db), match["id"]) if s["image"] == image)
    assert captions[0] == "UDC input" and captions[5] == "ground truth"
    assert f"{score['clean_psnr']:.2f} dB" in captions[3]
    assert f"{score['adv_psnr']:.2f} dB" in captions[4]
    assert captions[6].startswith("restored attacked − restored clean, ×")
    assert f"arena reproduce {match['key']} --db {db}" in [c.value for c in app.code]
    # another ε: the captions are that match's, not the previous one's
    other = next(v for v in app.selectbox(key="gal-eps").options if v != picked["eps"])
    app.selectbox(key="gal-eps").set_value(other).run()
    assert not app.exception
    picked["eps"] = other
    (match2,) = [m for m in views.gallery_matches(open_reader(db), tid)
                 if (m["threat"], eps_label(m["eps"]), m["restorer"], m["defense"], m["attack"], str(m["seed"]))
                 == tuple(picked.values())]
    score2 = next(s for s in queries.scores_of(open_reader(db), match2["id"]) if s["image"] == image)
    captions2 = [p.proto.imgs[0].caption for p in app.get("image")]
    assert f"{score2['adv_psnr']:.2f} dB" in captions2[4] and captions2[1] != captions[1]
    assert app.query_params["eps"] == [other] if isinstance(app.query_params["eps"], list) else other


def test_runs_page_lists_tournaments_failures_and_commands(app, arena_db):
    db, broken, tid = arena_db
    app.switch_page("sections/runs.py").run()
    assert not app.exception
    tournaments = app.dataframe[0].value
    assert list(tournaments["id"]) == [tid, broken]
    assert "arena run small.toml" in [c.value for c in app.code]
    app.selectbox(key="tournament").set_value(broken).run()
    problems = next(df.value for df in app.dataframe if "reason" in df.columns)
    assert sorted(problems["status"]) == ["disqualified", "failed"]
    assert problems.set_index("attack").loc["boom", "reason"].startswith("attack raised RuntimeError")
    for key, command in zip(problems["key"], problems["command"]):
        assert command == f"arena reproduce {key} --db {db}"
    assert any("boom from a plugin" in c.value for c in app.code)  # the stored traceback
    assert "arena run broken.toml" in [c.value for c in app.code]


def test_all_tournaments_and_pages_render_and_nothing_is_written(arena_db, monkeypatch):
    db = arena_db[0]
    before = hashlib.sha256(Path(db).read_bytes()).hexdigest()
    monkeypatch.setenv("ARENA_DB", db)
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.selectbox(key="tournament").set_value("all").run()  # every stored match
    assert not at.exception and len(shown_leaderboards(at)) == 4
    for page in PAGES:
        at.switch_page(f"sections/{page}.py").run()
        assert not at.exception, (page, at.exception)
        assert not at.error, (page, [e.value for e in at.error])
        assert at.session_state["tournament"] == "all"  # the choice holds across pages
    assert hashlib.sha256(Path(db).read_bytes()).hexdigest() == before


@pytest.mark.parametrize("kind", ["missing", "creating", "foreign"])
def test_app_waits_for_a_missing_and_refuses_a_foreign_database(tmp_path, monkeypatch, kind):
    path = tmp_path / f"{kind}.db"
    if kind == "foreign":
        sqlite3.connect(path).execute("create table x (y int)").connection.commit()
    if kind == "creating":  # a driver has just created the file and not yet written its schema
        path.touch()
    monkeypatch.setenv("ARENA_DB", str(path))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert not at.dataframe
    if kind == "missing":  # opens, says there are no results yet, and waits for the file
        assert not at.error and "No results yet" in at.info[0].value
        assert not path.exists()  # waiting must not create an empty database
        return
    if kind == "creating":
        assert not at.error and "is being created" in at.info[0].value
        return
    (error,) = at.error  # a foreign file has tables: refused at once, young or not
    assert "Cannot open the results database" in error.value and "not a udc-arena database" in error.value


def test_dashboard_loads_neither_torch_nor_ray(arena_db):
    script = (
        "import os, sys\n"
        "import arena.store.views, arena.store.queries, arena.report\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({APP!r}, default_timeout=60).run()\n"
        f"for page in {PAGES!r}:\n"
        "    at.switch_page(f'sections/{page}.py').run()\n"
        "    assert not at.exception, at.exception\n"
        "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))\n"
    )
    env = dict(os.environ, ARENA_DB=arena_db[0])
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_report_writes_markdown_and_plots(arena_db, tmp_path):
    from PIL import Image

    from arena.report import write_report

    db, broken, tid = arena_db
    paths = write_report(db, tmp_path / "report")
    names = sorted(p.name for p in paths)
    assert names == ["eps_curves_linf.png", "gallery.png", "heatmap.png", "leaderboard.md"]
    for p in paths:
        assert p.is_file() and p.stat().st_size > 0
        if p.suffix == ".png":
            with Image.open(p) as img:
                assert img.width > 300 and img.height > 200
    md = (tmp_path / "report" / "leaderboard.md").read_text()
    assert md.count("## Leaderboard:") == 4 and md.count("## Attacks:") == 4
    assert "arena run small.toml" in md
    for r in views.leaderboard(open_reader(db), tid):
        line = f"| {r['rank']} | {r['restorer']} | {r['defense']} | {r['clean_psnr']:.2f} |"
        assert line in md
        assert f"{r['robust_psnr']:.2f}" in md
    # the heat maps' one scale: without the noise floor and the clean row unless asked for
    from arena.report import heatmap_scale

    cells = [c for r in ("identity", "tiny") for b in views.budgets(open_reader(db), tid)
             for c in views.matrix(open_reader(db), tid, restorer=r, threat=b["threat"], norm=b["norm"], eps=b["eps"])]
    attacked = [c["robust_psnr"] for c in cells if c["attack"] != "signnoise"]
    assert heatmap_scale(cells, {"signnoise"}, clean_in=False) == (min(attacked), max(attacked))
    every = [c["robust_psnr"] for c in cells] + [c["clean_psnr"] for c in cells]
    assert heatmap_scale(cells, set(), clean_in=True) == (min(every), max(every))
    assert max(every) > max(attacked)  # the clean row would take the top of the scale
    with_floor = write_report(db, tmp_path / "floor", floor_in_scale=True)
    assert (tmp_path / "floor" / "heatmap.png").read_bytes() != (tmp_path / "report" / "heatmap.png").read_bytes()
    assert len(with_floor) == len(paths)
    problems = write_report(db, tmp_path / "broken", tournament_id=broken)[0].read_text()
    assert "**disqualified**" in problems and "**failed**" in problems and "arena reproduce" in problems


@pytest.mark.postgres
@pytest.mark.slow
def test_views_agree_on_postgres_and_sqlite(tmp_path):
    """The dashboard's queries (window functions, grouped subqueries) on a real server."""
    from pg import postgres_server

    with postgres_server() as pg_url:
        require_tool(pg_url, "PostgreSQL")
        registry = load_registry(modules=(module_with(SignNoise),))
        t = config(attacks=["fgsm", "signnoise"], budgets=[{"eps": "4/255", "steps": 2}, {"eps": "8/255", "steps": 2}])
        sqlite_db = str(tmp_path / "a.db")
        for db in (sqlite_db, pg_url):
            run_tournament(t, db, executor="local", progress=False, registry=registry)
        calls = [
            ("leaderboard", {}), ("leaderboard", {"attack_kinds": ["decision-free"]}),
            ("attack_ranking", {}), ("budgets", {}), ("options", {}),
            ("matrix", {"restorer": "tiny", "threat": "oblivious", "norm": "linf", "eps": 8 / 255}),
            ("eps_curves", {"norm": "linf"}),
            ("system_matches", {"threat": "oblivious", "norm": "linf", "eps": 4 / 255,
                                "restorer": "identity", "defense": "jpeg"}),
        ]

        def strip(value):
            if isinstance(value, dict):
                return {k: strip(v) for k, v in value.items()
                        if k not in ("id", "defense_ms_per_mp", "attack_ms_per_mp", "peak_mem_mb", "time_attack_s",
                                     "tournament_id")}
            if isinstance(value, list):
                return [strip(v) for v in value]
            return round(value, 6) if isinstance(value, float) else value

        pg, lite = open_reader(pg_url), open_reader(sqlite_db)
        for name, kwargs in calls:
            got = strip(getattr(views, name)(pg, **kwargs))
            assert got, name
            assert got == strip(getattr(views, name)(lite, **kwargs)), name


def test_runs_page_says_which_host_ran_the_matches(app, arena_db):
    import socket

    app.switch_page("sections/runs.py").run()
    app.selectbox(key="tournament").set_value("all").run()
    assert not app.exception
    nodes = next(df.value for df in app.dataframe if "node" in df.value.columns)
    assert list(nodes["node"]) == [socket.gethostname()]  # the local executor: this host
    assert nodes["matches"].sum() == len(queries.matches(open_reader(arena_db[0])))
    assert any(f"node {socket.gethostname()}" in c.value for c in app.caption)


@pytest.fixture
def live_copy(arena_db, tmp_path):
    """A copy of the module's database (SQLite's backup: the write-ahead log included) to play
    a running tournament in."""
    db = str(tmp_path / "live.db")
    src, dst = sqlite3.connect(arena_db[0]), sqlite3.connect(db)
    src.backup(dst)
    src.close()
    dst.close()
    return db, arena_db[2]


def test_live_progress_says_when_a_tournament_is_active(live_copy):
    import time
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import delete, update

    from arena.store import live

    db, tid = live_copy
    fresh = str(Path(db).with_name("fresh.db"))
    open_writer(fresh)  # a driver has just created its database: no tournament row yet
    assert live.progress(open_reader(fresh))["active"]
    reader, writer = open_reader(db), open_writer(db)
    done = live.progress(reader, tid)
    assert done["stored"] == done["planned"] and done["unverified"] == 0
    assert not done["active"] and done["running"] == 0  # finished: idle at once
    before = live.stamp(reader)
    now = datetime.now(timezone.utc)
    with writer.begin() as conn:  # a driver claims a match: running
        conn.execute(models.claims.insert().values(key="k-live", owner="h:1:x", expires_at=now + timedelta(hours=1)))
    running = live.progress(reader, tid)
    assert running["running"] == 1 and running["active"]
    assert live.stamp(reader) != before  # the pages rerun
    with writer.begin() as conn:  # its claim expired: nothing in flight
        conn.execute(update(models.claims).values(expires_at=now - timedelta(seconds=1)))
    assert live.progress(reader, tid)["running"] == 0
    with writer.begin() as conn:  # a run just started (Ray starting): no claim yet, matches to go
        conn.execute(delete(models.claims))
        conn.execute(update(models.tournaments).where(models.tournaments.c.id == tid)
                     .values(updated_at=now, planned=done["stored"] + 3))
    starting = live.progress(reader, tid)
    assert starting["active"] and starting["running"] == 0 and starting["planned"] == done["stored"] + 3
    old = time.time() - 2 * live.ACTIVE_GRACE_S
    with writer.begin() as conn:  # the same, but its driver last wrote long ago: not running
        conn.execute(update(models.tournaments).values(updated_at=now - timedelta(seconds=2 * live.ACTIVE_GRACE_S)))
        conn.execute(update(models.matches).values(finished_at=old, started_at=old - 1))
        conn.execute(update(models.schema_migrations).values(
            applied_at=now - timedelta(seconds=2 * live.ACTIVE_GRACE_S)))
    assert not live.progress(reader, tid)["active"]
    key = queries.matches(reader, tid)[0]["key"]
    with writer.begin() as conn:  # re-scoring at the end: a driver still holds a stored match's claim
        conn.execute(models.claims.insert().values(key=key, owner="h:1:x", expires_at=now + timedelta(hours=1)))
        conn.execute(update(models.matches).where(models.matches.c.key == key).values(verified=None))
        conn.execute(update(models.tournaments).where(models.tournaments.c.id == tid).values(planned=done["stored"]))
    rescoring = live.progress(reader, tid)
    assert rescoring["active"] and rescoring["running"] == 0 and rescoring["held"] == 1
    with writer.begin() as conn:  # verified: finished, whatever the driver still holds
        conn.execute(update(models.matches).where(models.matches.c.key == key).values(verified=True))
    assert not live.progress(reader, tid)["active"]
    mark = live.stamp(reader)
    with writer.begin() as conn:  # a fresh re-score's verdict changes what the pages show
        conn.execute(update(models.matches).where(models.matches.c.verified.is_(True)).values(verified=False))
    assert live.stamp(reader) != mark


def test_pages_say_a_tournament_is_running(live_copy, monkeypatch):
    from datetime import datetime, timedelta, timezone

    db, tid = live_copy
    with open_writer(db).begin() as conn:
        conn.execute(models.claims.insert().values(key="k-live", owner="h:1:x",
                                                   expires_at=datetime.now(timezone.utc) + timedelta(hours=1)))
    monkeypatch.setenv("ARENA_DB", db)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    stored = sum(queries.status_counts(open_reader(db), tid).values())
    (banner,) = at.warning
    assert banner.value.startswith(f"A tournament is running: {stored} of {stored} matches stored, 1 in flight")
    assert "refreshes itself every 3 s" in banner.value
    at.switch_page("sections/runs.py").run()
    assert not at.exception
    assert "Running now" in [s.value for s in at.subheader]
    assert {m.label: m.value for m in at.metric}["running"] == "1"
    assert any("refreshes every 3 s while the tournament runs" in c.value for c in at.caption)
