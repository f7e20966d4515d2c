"""Leaderboard: the answer first (the most robust system per threat model and budget), then one
table per ε with clean, oblivious and adaptive robust PSNR side by side, then the full table of
each threat model and budget, never mixing them."""

import json
import urllib.parse

import streamlit as st

import common

db, tid = common.db_url(), common.tournament_id()
st.title("Leaderboard")
st.caption("Robust PSNR/SSIM: per image, the worst case over the counted attacks; then the mean "
           "over images (AutoAttack's aggregation). Only done matches verified by a fresh re-score "
           "count; a system is ranked only when all its matches are, and the others follow unranked.")
for threat, line in common.THREAT_MODELS.items():
    st.markdown(f"**{threat}**: {line}.")
# above the first st.stop(): a page opened before the first result still follows the run
live = common.auto_refresh(db, tid)

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

# while a tournament is active and matches are known to be still to come (claims held, or fewer
# stored than planned), a system with fewer stored matches than the others at its budget has
# matches not yet run: it is marked incomplete and left unranked
to_come = live["held"] or (live["planned"] is not None and live["stored"] < live["planned"])
if live["active"] and to_come:
    most: dict[tuple, int] = {}
    for r in rows:
        k = (r["threat"], r["norm"], r["eps"])
        most[k] = max(most.get(k, 0), r["planned"])
    for r in rows:
        if r["planned"] < most[(r["threat"], r["norm"], r["eps"])]:
            r["status"], r["rank"] = "incomplete", None
            r["why"] = "; ".join(filter(None, [f"{r['planned']} of {most[(r['threat'], r['norm'], r['eps'])]} "
                                                "matches stored so far (tournament running)", r["why"]]))

flag_rows = common.view("flags", db, tid)


def flag_text(f) -> str:
    """How the leaderboard row's own text names a flag (views.leaderboard)."""
    return f"{f['flag']}" + (f" ({f['attack']})" if f["attack"] else "") + ": "


for r in rows:  # the row's flags as stored records (attack filters leave some out of r["flags"])
    r["flag_list"] = [f for f in flag_rows if (f["threat"], f["norm"], f["restorer"], f["defense"])
                      == (r["threat"], r["norm"], r["restorer"], r["defense"]) and f["eps"] is not None
                      and abs(f["eps"] - r["eps"]) <= common.views.EPS_TOLERANCE and flag_text(f) in r["flags"]]

def cell(r):
    """The robust number with its flags as short badges beside it."""
    if r is None or r["robust_psnr"] is None:
        return "—"
    badges = " ".join(dict.fromkeys(common.badge(f["flag"]) for f in r["flag_list"]))
    return f"{r['robust_psnr']:.2f}" + (f" {badges}" if badges else "")


def gallery_params(r) -> dict[str, str]:
    """The gallery's query parameters for a leaderboard row (its pickers' values)."""
    eps = common.display.eps_label(r["eps"])
    return {"threat": r["threat"], "eps": eps if r["norm"] == "linf" else f"{r['norm']} {eps}",
            "restorer": r["restorer"], "defense": r["defense"]}


def gallery_link(r) -> str:
    return "gallery?" + urllib.parse.urlencode(gallery_params(r), quote_via=urllib.parse.quote)


budgets = list(dict.fromkeys((r["norm"], r["eps"]) for r in rows))
threats = [t for t in ("oblivious", "adaptive") if any(r["threat"] == t for r in rows)]
threats += sorted({r["threat"] for r in rows} - set(threats))

st.header("Most robust system")
summary = []
for norm, eps in budgets:
    line = {"budget": common.eps_label(norm, eps)}
    for threat in threats:
        ranked = [r for r in rows if r["threat"] == threat and r["rank"] == 1 and r["norm"] == norm
                  and abs(r["eps"] - eps) <= common.views.EPS_TOLERANCE]
        line[threat] = (f"{ranked[0]['restorer']} + {ranked[0]['defense']}: {ranked[0]['robust_psnr']:.2f} dB"
                        if ranked else "none ranked yet")
    summary.append(line)
st.table(common.frame(summary, ["budget", *threats]).set_index("budget"))

st.header("Per budget: clean, oblivious and adaptive")
st.caption("gap = robust oblivious − robust adaptive: how much the oblivious setting overstates robustness. "
           "Rank by the adaptive robust PSNR (the oblivious one where no adaptive match exists). "
           "Badges: " + ", ".join(f"{b} {f}" for f, b in common.BADGES.items() if f != "test-only")
           + " (reasons under each table).")
for norm, eps in budgets:
    systems: dict[tuple, dict] = {}
    for r in rows:
        if r["norm"] == norm and abs(r["eps"] - eps) <= common.views.EPS_TOLERANCE:
            systems.setdefault((r["restorer"], r["defense"]), {})[r["threat"]] = r
    lead = "adaptive" if "adaptive" in threats else threats[0]
    table = []
    for (restorer, defense), by in systems.items():
        any_row = next(iter(by.values()))
        o, a = by.get("oblivious"), by.get("adaptive")
        head = by.get(lead) or any_row
        statuses = {t: r["status"] for t, r in by.items()}
        gap = (o["robust_psnr"] - a["robust_psnr"]
               if o and a and o["robust_psnr"] is not None and a["robust_psnr"] is not None else None)
        table.append({
            "rank": head["rank"], "restorer": restorer, "defense": defense,
            "status": ", ".join(sorted(set(statuses.values()))),
            "clean": next((r["clean_psnr"] for r in by.values() if r["clean_psnr"] is not None), None),
            "oblivious": cell(o), "adaptive": cell(a), "gap": gap,
            "gallery": gallery_link(head),
        })
    table.sort(key=lambda t: (t["rank"] is None, t["rank"] or 0, t["restorer"], t["defense"]))
    st.subheader(common.eps_label(norm, eps))
    st.dataframe(common.frame(table, list(table[0])), hide_index=True, key=f"side-{norm}-{eps}",
                 height=common.table_height(len(table)),
                 column_config={
                     "rank": st.column_config.NumberColumn("rank", format="%d", help="by the adaptive robust PSNR"),
                     "clean": common.number("clean PSNR", help="defended system on clean input, dB"),
                     "oblivious": st.column_config.TextColumn("robust oblivious", help="dB, with flag badges"),
                     "adaptive": st.column_config.TextColumn("robust adaptive", help="dB, with flag badges"),
                     "gap": common.number("gap", help="robust oblivious − robust adaptive, dB"),
                     "gallery": st.column_config.LinkColumn("gallery", display_text="images →"),
                 })
    reasons = [f for by in systems.values() for r in by.values() for f in r["flag_list"]]
    if reasons:
        with st.expander(f"Flags at {common.eps_label(norm, eps)} ({len(reasons)})"):
            st.markdown("\n".join(f"- {common.badge(f['flag'])} `{f['flag']}` **{f['restorer']} + {f['defense']}** "
                                  f"({f['threat']}" + (f", {f['attack']}" if f["attack"] else "") + f"): {f['reason']}"
                                  for f in reasons))

columns = list(common.LEADERBOARD_COLUMNS)
for r in rows:
    r["defense_s_per_mp"] = r["defense_ms_per_mp"] / 1000 if r["defense_ms_per_mp"] is not None else None
# the budgets of the rows themselves: a system with no counted match is listed too (unranked)
full = [dict(zip(("threat", "norm", "eps"), k)) for k in dict.fromkeys((r["threat"], r["norm"], r["eps"])
                                                                      for r in rows)]
for threat in dict.fromkeys(b["threat"] for b in full):
    st.header(f"{threat} threat model")
    for b in (b for b in full if b["threat"] == threat):
        members = [r for r in rows if common.same_budget(r, b)]
        if not members:
            continue
        st.subheader(common.eps_label(b["norm"], b["eps"]))
        st.dataframe(common.frame(members, columns), hide_index=True, height=common.table_height(len(members)),
                     column_config=common.LEADERBOARD_COLUMNS, key=f"lb-{common.budget_label(b)}")

st.download_button("Leaderboard (CSV)", common.frame(rows, [c for c in columns if c != "defense_s_per_mp"]
                                                     + ["threat", "norm", "eps", "defense_ms_per_mp"]).to_csv(index=False),
                   file_name="leaderboard.csv", mime="text/csv", key="lb-csv")
st.download_button("Leaderboard (JSON)", json.dumps(rows, default=str, indent=1), file_name="leaderboard.json",
                   mime="application/json", key="lb-json")

st.header("Reproduce a row")
systems = {f"{common.budget_label(r)} · {r['restorer']} + {r['defense']}": r for r in rows}
label = st.selectbox("Leaderboard row", list(systems))
row = systems[label]
st.page_link("sections/gallery.py", label=f"Gallery of {row['restorer']} + {row['defense']} at "
             f"{common.budget_label(row)}", icon=":material/photo_library:",
             query_params=gallery_params(row))
members = common.view("system_matches", db, tid, threat=row["threat"], norm=row["norm"], eps=row["eps"],
                      restorer=row["restorer"], defense=row["defense"])
for m in members:
    m["command"] = common.display.reproduce_command(m["key"], db)
columns = ["attack", "attack_kind", "seed", "status", "adv_psnr", "n_images", "key", "command"]
st.dataframe(common.frame(members, columns), hide_index=True, height=common.table_height(len(members)),
             column_config={"adv_psnr": common.number("mean adv PSNR")})
tournaments = {t["id"]: t for t in common.query("tournaments", db)}
for t_id in sorted({m["tournament_id"] for m in members}):
    t = tournaments.get(t_id)
    if t and t["command"]:
        st.caption(f"Tournament #{t_id} {t['name']!r} was run with:")
        st.code(t["command"], language="bash")
