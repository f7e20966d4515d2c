"""Leaderboard: one table per threat model and budget, never mixing them."""

import streamlit as st

import common

db, tid = common.db_url(), common.tournament_id()
st.title("Leaderboard")
st.caption("Robust PSNR/SSIM: per image, the worst case over the counted attacks; then the mean "
           "over images (AutoAttack's aggregation). Only done matches verified by a fresh re-score "
           "count; a system is ranked only when all its matches are, and the others follow unranked.")

opts = common.view("options", db, tid)
c1, c2, c3, c4 = st.columns(4)
restorers = c1.multiselect("Restorer", opts["restorer"], placeholder="all")
defenses = c2.multiselect("Defense", opts["defense"], placeholder="all")
kinds = c3.multiselect("Attack kind", opts["attack_kind"], placeholder="all",
                       help="Only attacks of these kinds count toward the worst case.")
attacks = c4.multiselect("Attack", opts["attack"], placeholder="all",
                         help="Only these attacks count toward the worst case.")

rows = common.view("leaderboard", db, tid, restorers=restorers or None, defenses=defenses or None,
                   attacks=attacks or None, attack_kinds=kinds or None)
if not rows:
    st.info("No scored matches for this selection yet.")
    st.stop()

columns = list(common.LEADERBOARD_COLUMNS)
# the budgets of the rows themselves: a system with no counted match is listed too (unranked)
budgets = [dict(zip(("threat", "norm", "eps"), k)) for k in dict.fromkeys((r["threat"], r["norm"], r["eps"])
                                                                         for r in rows)]
for threat in dict.fromkeys(b["threat"] for b in budgets):
    st.header(f"{threat} threat model")
    for b in (b for b in budgets if b["threat"] == threat):
        members = [r for r in rows if common.same_budget(r, b)]
        if not members:
            continue
        st.subheader(common.eps_label(b["norm"], b["eps"]))
        st.dataframe(common.frame(members, columns), hide_index=True,
                     column_config=common.LEADERBOARD_COLUMNS, key=f"lb-{common.budget_label(b)}")

st.header("Reproduce a row")
systems = {f"{common.budget_label(r)} · {r['restorer']} + {r['defense']}": r for r in rows}
label = st.selectbox("Leaderboard row", list(systems))
row = systems[label]
members = common.view("system_matches", db, tid, threat=row["threat"], norm=row["norm"], eps=row["eps"],
                      restorer=row["restorer"], defense=row["defense"])
for m in members:
    m["command"] = common.display.reproduce_command(m["key"], db)
columns = ["attack", "attack_kind", "seed", "status", "adv_psnr", "n_images", "key", "command"]
st.dataframe(common.frame(members, columns), hide_index=True,
             column_config={"adv_psnr": common.number("mean adv PSNR")})
tournaments = {t["id"]: t for t in common.query("tournaments", db)}
for t_id in sorted({m["tournament_id"] for m in members}):
    t = tournaments.get(t_id)
    if t and t["command"]:
        st.caption(f"Tournament #{t_id} {t['name']!r} was run with:")
        st.code(t["command"], language="bash")
