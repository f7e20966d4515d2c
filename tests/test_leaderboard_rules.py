"""The leaderboard's rules ("complete or unranked", "failures in plain sight"): each with a case
that breaks it, on rows written straight into a real SQLite file."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from arena.cli import LEADERBOARD_KEYS, main
from arena.flags import compute_flags, store_flags
from arena.store import queries, views, write
from arena.store.db import open_reader, open_writer

EPS = 8 / 255
ROOT = Path(__file__).resolve().parent.parent
COLOURED = ("Traceback (most recent call last):\n  File \"plugin.py\", line 3, in purify\n"
            "\x1b[1;31mValueError\x1b[0m: \x1b[33m" + "the defense refuses this input " * 8 + "\x1b[0m\n")
PLAIN = re.sub(r"\x1b\[[0-9;]*m", "", COLOURED)


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "arena.db"
    engine = open_writer(path)
    tid = write.upsert_tournament(engine, config_hash="h", name="t", config={})
    n = iter(range(10_000))

    def add(attack, *, system=("r", "none"), kind="white-box", status="done", blame=None, verified=True,
            scores=None, **extra):
        """One match of ``system`` at the one budget; ``scores``: adversarial PSNR per image."""
        if scores is None:
            scores = (20.0, 20.0) if status == "done" else ()
        row = {"key": f"k{next(n)}", "restorer": system[0], "defense": system[1], "attack": attack,
               "attack_kind": kind, "threat": "oblivious", "norm": "linf", "eps": EPS, "spec": {},
               "status": status, "blame": blame, "verified": verified if status == "done" else None, **extra}
        write.write_result(engine, tid, row, [
            {"image": f"i{i}", "clean_psnr": 30.0, "clean_ssim": 0.9, "adv_psnr": v, "adv_ssim": v / 40}
            for i, v in enumerate(scores)])

    add.path, add.engine = str(path), engine
    return add


def board(db) -> dict[tuple, dict]:
    return {(r["restorer"], r["defense"]): r for r in views.leaderboard(open_reader(db.path))}


def cli(*args):
    res = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.parametrize("status", ["failed", "disqualified"])
@pytest.mark.parametrize("blame", ["system", "infra", None])
def test_a_failure_not_blamed_on_the_attack_leaves_the_system_unranked(db, status, blame):
    db("pgd", scores=(28, 28))
    db("fgsm", scores=(29, 29))
    db("square", kind="score-based", status=status, blame=blame, reason="defense raised ValueError: no")
    db("pgd", system=("r2", "none"), scores=(20, 20))
    rows = board(db)
    broken, whole = rows[("r", "none")], rows[("r2", "none")]
    assert whole["status"] == "ranked" and whole["rank"] == 1
    assert broken["status"] == "unranked" and broken["rank"] is None  # though its partial score is higher
    assert (broken["planned"], broken["done"], broken[status], broken["pending"]) == (3, 2, 1, 0)
    assert f"1 {status} ({blame or 'blame unknown'}): defense raised ValueError: no" in broken["why"]
    assert list(rows) == [("r2", "none"), ("r", "none")]  # unranked rows come after the ranked


@pytest.mark.parametrize("status", ["failed", "disqualified"])
def test_a_failure_blamed_on_the_attack_neither_blocks_nor_counts(db, status):
    db("pgd", scores=(20, 24))
    db("fgsm", scores=(22, 21))
    # stored scores of a rule-breaking attack must not enter the worst case either
    db("cheat", status=status, blame="attack", scores=(5, 5), reason="perturbation exceeds eps")
    (row,) = board(db).values()
    assert row["status"] == "ranked" and row["rank"] == 1
    assert row["robust_psnr"] == pytest.approx(20.5) and row["n_attacks"] == 2
    assert row["attack_blamed"] == 1 and row[status] == 1 and row["planned"] == 3
    assert "(attack), not counted: perturbation exceeds eps" in row["why"]


@pytest.mark.parametrize("verified", [None, False])
def test_a_pending_match_blocks_ranking_and_is_not_scored(db, verified):
    db("pgd", scores=(25, 25))
    db("fgsm", scores=(10, 10), verified=verified)
    db("pgd", system=("r2", "none"), scores=(20, 20))
    rows = board(db)
    pending = rows[("r", "none")]
    assert pending["status"] == "unranked" and pending["rank"] is None
    assert (pending["done"], pending["pending"]) == (1, 1) and "1 pending" in pending["why"]
    assert pending["robust_psnr"] == pytest.approx(25)  # the unverified 10 dB is not scored
    assert rows[("r2", "none")]["rank"] == 1


def test_a_system_whose_every_match_failed_still_appears(db):
    db("pgd", scores=(20, 20))
    db("pgd", system=("r", "broken"), status="failed", blame="system", reason="defense returned NaN")
    db("fgsm", system=("r", "broken"), status="failed", blame="infra", reason="worker died")
    rows = board(db)
    row = rows[("r", "broken")]
    assert row["status"] == "unranked" and row["rank"] is None
    assert row["robust_psnr"] is None and row["n_images"] == 0
    assert (row["planned"], row["done"], row["failed"]) == (2, 0, 2)
    assert "defense returned NaN" in row["why"] and "worker died" in row["why"]
    assert rows[("r", "none")]["rank"] == 1
    text = cli("leaderboard", "--db", db.path)
    unranked = text.split("unranked (incomplete)")[1]
    assert "broken" in unranked and "0/2 done, 2 failed" in unranked


def test_masked_gradients_stay_unverified_until_a_gradient_free_attack_is_verified(db):
    masked = ("r", "shatter")
    db("pgd", system=masked, scores=(30, 30), start_grad={"finite": True, "abs_mean": 0.0})
    db("pgd", scores=(20, 20))

    def refresh():
        store_flags(db.engine, compute_flags(db.engine))
        return board(db)

    rows = refresh()
    assert "bad-gradient" in rows[masked]["flags"]  # the name views.MASKING_FLAGS relies on
    assert rows[masked]["status"] == "unverified" and rows[masked]["rank"] is None
    assert rows[("r", "none")]["rank"] == 1 and list(rows)[-1] == masked  # not above a clean one
    db("fgsm", system=masked, scores=(29, 29))  # another gradient attack proves nothing
    assert refresh()[masked]["status"] == "unverified"
    db("square", system=masked, kind="score-based", scores=(28, 28))
    rows = refresh()
    assert rows[masked]["status"] == "ranked" and rows[masked]["rank"] == 1
    assert rows[("r", "none")]["rank"] == 2
    assert "bad-gradient" in rows[masked]["flags"]  # ranked, flag kept


def _mixed(db):
    db("pgd", scores=(20, 20))
    db("pgd", system=("r", "shatter"), scores=(30, 30), start_grad={"finite": False, "abs_mean": 1.0})
    db("pgd", system=("r", "broken"), status="failed", blame="system", reason="defense raised")
    store_flags(db.engine, compute_flags(db.engine))


def test_leaderboard_table_prints_the_blocks_with_counts_and_reasons(db):
    _mixed(db)
    text = cli("leaderboard", "--db", db.path)
    ranked, rest = text.split("unverified: ")
    unverified, unranked = rest.split("unranked (incomplete)")
    assert " none " in ranked and "shatter" not in ranked and "broken" not in ranked
    assert "(1):" in unverified and "shatter" in unverified and "bad-gradient" in unverified
    assert "(1):" in unranked and "broken" in unranked and "1 failed (system): defense raised" in unranked


def test_leaderboard_json_and_csv_carry_the_documented_keys(db):
    _mixed(db)
    section = (ROOT / "README.md").read_text().split("### Leaderboard JSON")[1].split("\n## ")[0]
    documented = [k for line in section.splitlines() if line.startswith("| `")
                  for k in re.findall(r"`([a-z_]+)`", line.split(" | ")[0])]
    assert sorted(documented) == sorted(LEADERBOARD_KEYS)
    rows = json.loads(cli("leaderboard", "--db", db.path, "--format", "json"))
    assert [list(r) for r in rows] == [LEADERBOARD_KEYS] * 3
    assert [(r["defense"], r["status"], r["rank"]) for r in rows] == [
        ("none", "ranked", 1), ("shatter", "unverified", None), ("broken", "unranked", None)]
    assert rows[2]["failed"] == 1 and rows[2]["robust_psnr"] is None
    reader = csv.DictReader(io.StringIO(cli("leaderboard", "--db", db.path, "--format", "csv")))
    assert reader.fieldnames == LEADERBOARD_KEYS
    lines = list(reader)
    assert [(r["defense"], r["status"], r["rank"]) for r in lines] == [
        ("none", "ranked", "1"), ("shatter", "unverified", ""), ("broken", "unranked", "")]
    assert float(lines[0]["robust_psnr"]) == pytest.approx(rows[0]["robust_psnr"])


def test_matches_full_prints_the_whole_error_without_escape_codes(db):
    db("pgd", scores=(20, 20))
    db("fgsm", verified=None)
    db("square", kind="score-based", status="failed", blame="system",
       reason="\x1b[31mdefense raised ValueError\x1b[0m", error=COLOURED)
    full = cli("matches", "--db", db.path, "--status", "failed", "--full")
    assert PLAIN.rstrip("\n") in full and "\x1b" not in full
    assert "reason: defense raised ValueError" in full and "fgsm" not in full
    short = cli("matches", "--db", db.path, "--status", "failed")
    assert "\x1b" not in short and "defense raised ValueError" in short and "Traceback" not in short
    (row,) = json.loads(cli("matches", "--db", db.path, "--status", "failed", "--format", "json"))
    assert row["error"] == PLAIN and row["blame"] == "system" and row["status"] == "failed"
    listed = json.loads(cli("matches", "--db", db.path, "--status", "done,pending", "--format", "json"))
    assert [(r["attack"], r["status"]) for r in listed] == [("pgd", "done"), ("fgsm", "pending")]
    res = CliRunner().invoke(main, ["matches", "--db", db.path, "--status", "broken"])
    assert res.exit_code == 2 and "choose from done, pending" in res.output


def test_dashboard_shows_the_status_and_plain_reasons(db, monkeypatch):
    from streamlit.testing.v1 import AppTest

    _mixed(db)
    db("fgsm", system=("r", "broken"), status="failed", blame="system", reason="x", error=COLOURED)
    monkeypatch.setenv("ARENA_DB", db.path)
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60).run()
    assert not at.exception, at.exception
    (frame,) = [df.value for df in at.dataframe if "robust_psnr" in df.value.columns]
    assert list(frame["status"]) == ["ranked", "unverified", "unranked"]
    assert frame["rank"].iloc[0] == 1 and frame["rank"].iloc[1:].isna().all()
    at.switch_page("sections/runs.py").run()
    assert not at.exception, at.exception
    errors = [c.value for c in at.code if "Traceback" in c.value]
    assert errors and all("\x1b" not in e for e in errors) and PLAIN.rstrip() in [e.rstrip() for e in errors]
