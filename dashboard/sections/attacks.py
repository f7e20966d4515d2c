"""Attacks ranked by the damage they do across systems, with what they cost."""

import streamlit as st

import common

db, tid = common.db_url(), common.tournament_id()
st.title("Attacks")
st.caption("Damage = clean PSNR - adversarial PSNR of the defended system, averaged over images, "
           "then over systems (each system weighs the same). 'worst for' counts the systems "
           "for which the attack is the most damaging at that budget.")

opts = common.view("options", db, tid)
c1, c2 = st.columns(2)
restorers = c1.multiselect("Restorer", opts["restorer"], placeholder="all")
defenses = c2.multiselect("Defense", opts["defense"], placeholder="all")
rows = common.view("attack_ranking", db, tid, restorers=restorers or None, defenses=defenses or None)
if not rows:
    st.info("No scored matches for this selection yet.")
    st.stop()

columns = {
    "rank": st.column_config.NumberColumn("rank", format="%d"),
    "attack": st.column_config.TextColumn("attack"),
    "attack_kind": st.column_config.TextColumn("kind"),
    "damage_psnr": common.number("PSNR damage", help="dB"),
    "damage_ssim": common.number("SSIM damage", "%.4f"),
    "adv_psnr": common.number("adv PSNR"),
    "worst_for": st.column_config.NumberColumn("worst for", format="%d", help="systems"),
    "n_systems": st.column_config.NumberColumn("systems", format="%d"),
    "time_attack_s": common.number("time (s/match)", "%.3f"),
    "gradient_calls": common.number("gradient calls", "%.0f"),
    "queries": common.number("queries / image", "%.0f"),
    "queries_limit": st.column_config.NumberColumn("query limit", format="%d"),
}
for b in common.view("budgets", db, tid):
    members = [r for r in rows if common.same_budget(r, b)]
    if members:
        st.subheader(common.budget_label(b))
        st.dataframe(common.frame(members, list(columns)), hide_index=True, column_config=columns,
                     key=f"atk-{common.budget_label(b)}")
