"""`arena report`: the dashboard's main views as files, for papers, READMEs and CI artifacts.

Writes a Markdown leaderboard and PNG plots (heat maps, PSNR-versus-ε curves, a gallery sheet)
with matplotlib's Agg backend, so it runs on a machine with no display. Reads the database
read-only and imports neither torch nor Ray.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from arena.display import SAMPLE_KINDS, SAMPLE_TITLES, eps_label, one_line, reproduce_command, sample_path
from arena.store import queries, views
from arena.store.db import open_reader

LEADERBOARD = [("rank", "rank", "{}"), ("restorer", "restorer", "{}"), ("defense", "defense", "{}"),
               ("clean_psnr", "clean PSNR", "{:.2f}"), ("clean_ssim", "clean SSIM", "{:.4f}"),
               ("robust_psnr", "robust PSNR", "{:.2f}"), ("robust_ssim", "robust SSIM", "{:.4f}"),
               ("drop_psnr", "drop", "{:.2f}"), ("worst_attack", "worst attack", "{}"),
               ("defense_ms_per_mp", "defense ms/MP", "{:.1f}"), ("n_images", "images", "{}"),
               ("n_seeds", "seeds", "{}"), ("status", "status", "{}"), ("why", "why unranked", "{}"),
               ("flags", "sanity flags", "{}")]
ATTACKS = [("rank", "rank", "{}"), ("attack", "attack", "{}"), ("attack_kind", "kind", "{}"),
           ("damage_psnr", "PSNR damage", "{:.2f}"), ("damage_ssim", "SSIM damage", "{:.4f}"),
           ("worst_for", "worst for", "{}"), ("n_systems", "systems", "{}"),
           ("time_attack_s", "time (s/match)", "{:.3f}"), ("gradient_calls", "gradient calls", "{:.0f}"),
           ("queries", "queries / image", "{:.0f}")]


def write_report(db: str | Path, out_dir: str | Path = "arena-report",
                 tournament_id: int | None = None, floor_in_scale: bool = False) -> list[Path]:
    """Write ``leaderboard.md`` and its PNG figures into ``out_dir``; return the paths written.

    ``tournament_id`` picks the tournament (default: the most recently run one), as the
    dashboard does; its resumed matches count too. The heat maps' one colour scale leaves out
    the noise floor (decision-free attacks) and the clean row unless ``floor_in_scale``: they
    barely lower the PSNR and would take the top of the scale (their cells are clamped).
    """
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: no display, no GUI toolkit
    engine = open_reader(db)
    tid = tournament_id if tournament_id is not None else queries.latest_tournament_id(engine)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = views.leaderboard(engine, tid)
    figures = []
    if rows:
        figures.append(_heatmaps(engine, tid, rows, out / "heatmap.png", floor_in_scale))
        for norm in sorted({r["norm"] for r in rows}):
            figures.append(_curves(engine, tid, norm, out / f"eps_curves_{norm}.png"))
    sheet = _gallery_sheet(engine, tid, rows, db, out / "gallery.png")
    if sheet:
        figures.append(sheet)
    md = out / "leaderboard.md"
    md.write_text(_markdown(engine, tid, rows, db, figures))
    return [md, *figures]


def _fmt(value: Any, spec: str) -> str:
    if value is None or value == "":
        return ""
    try:
        text = spec.format(value)
    except (ValueError, TypeError):
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> list[str]:
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_fmt(r.get(k), spec) for k, _, spec in columns) + " |" for r in rows]
    return lines


def _budget_title(b: dict[str, Any]) -> str:
    return f"{b['threat']}, {b['norm']} ε = {eps_label(b['eps'])}"


def _by_budget(rows: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["threat"], r["norm"], r["eps"]), []).append(r)
    return groups


def _markdown(engine, tid, rows, db, figures: list[Path]) -> str:
    t = next((t for t in queries.tournaments(engine) if t["id"] == tid), None)
    lines = [f"# udc-arena report: {t['name'] if t else 'all stored matches'}", ""]
    if t:
        lines += [f"- tournament #{t['id']}, last run {t['updated_at']}, seed {t['seed']}, host {t['host']}",
                  f"- code {t['code_version']}; data {t['data_version']} ({(t['data_hash'] or '')[:12]})",
                  "- plugins used: " + ", ".join(f"{k} ({v})" for k, v in sorted(_used_plugins(engine, tid).items())),
                  f"- command: `{t['command']}`"]
    counts = queries.status_counts(engine, tid)
    lines += ["- matches: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"),
              f"- written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from `{db}`", ""]
    lines += ["Robust PSNR/SSIM: per image, the worst case over every attack; then the mean over "
              "images. Threat models and budgets are never mixed.", ""]
    if not rows:
        lines += ["No scored matches yet.", ""]
    winners = [r for r in rows if r["rank"] == 1]
    if winners:
        lines += ["## Most robust system", ""]
        lines += [f"- {_budget_title(r)}: **{r['restorer']} + {r['defense']}**, robust PSNR {r['robust_psnr']:.2f} dB "
                  f"(clean {r['clean_psnr']:.2f} dB)" for r in winners]
        lines.append("")
    for members in _by_budget(rows).values():
        lines += [f"## Leaderboard: {_budget_title(members[0])}", "", *_md_table(members, LEADERBOARD), ""]
    for members in _by_budget(views.attack_ranking(engine, tid)).values():
        lines += [f"## Attacks: {_budget_title(members[0])}", "", *_md_table(members, ATTACKS), ""]
    problems = views.problem_matches(engine, tid)
    if problems:
        lines += ["## Failed, disqualified and skipped matches", ""]
        for p in problems:
            lines.append(f"- **{p['status']}** {p['threat']} {p['norm']} ε={eps_label(p['eps'])} "
                         f"{p['restorer']} + {p['defense']} vs {p['attack']}: {_fmt(one_line(p['reason']), '{}')} "
                         f"(`{reproduce_command(p['key'], db)}`)")
        lines.append("")
    for f in figures:
        lines += [f"![{f.stem}]({f.name})", ""]
    return "\n".join(lines)


def _used_plugins(engine, tid) -> dict[str, str]:
    """The components the tournament's matches ran with ("role:name": version), not every
    installed plugin."""
    used: dict[str, str] = {}
    for mt in queries.matches(engine, tid):
        used.update(mt["versions"] or {})
    return used


def _defense_order(defenses) -> list[str]:
    """Defenses with the undefended system first."""
    return sorted(set(defenses), key=lambda d: (d != "none", d))


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=120, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _heatmaps(engine, tid, rows, path: Path, floor_in_scale: bool = False) -> Path:
    import matplotlib.pyplot as plt

    budgets = list(_by_budget(rows))
    restorers = sorted({r["restorer"] for r in rows})
    fig, axes = plt.subplots(len(budgets), len(restorers), squeeze=False,
                             figsize=(4.2 * len(restorers), 3.8 * len(budgets)),
                             gridspec_kw={"hspace": 0.45})
    panels = {(b, restorer): views.matrix(engine, tid, restorer=restorer, threat=b[0], norm=b[1], eps=b[2])
              for b in budgets for restorer in restorers}
    noise = {a["attack"] for a in views.attack_ranking(engine, tid) if a["attack_kind"] == "decision-free"}
    scale = heatmap_scale([c for cells in panels.values() for c in cells],
                          set() if floor_in_scale else noise, clean_in=floor_in_scale)
    image = None
    for b, ax_row in zip(budgets, axes):
        for restorer, ax in zip(restorers, ax_row):
            title = f"{restorer} | {_budget_title({'threat': b[0], 'norm': b[1], 'eps': b[2]})}"
            image = _heatmap(ax, panels[(b, restorer)], title, scale) or image
    if image is not None:
        fig.colorbar(image, ax=axes, fraction=0.02, pad=0.02, label="robust PSNR (dB)",
                     extend="neither" if floor_in_scale else "both")
    fig.suptitle("Robust PSNR (dB), attack × defense (clean: no attack; ALL: worst case over attacks)\none colour "
                 "scale" + ("" if floor_in_scale else ", without the noise floor and the clean row (clamped)"))
    return _save(fig, path)


def heatmap_scale(cells, left_out: set[str], clean_in: bool) -> tuple[float, float]:
    """One colour scale for every panel: the attacks' cells (and the clean PSNR if ``clean_in``)
    except those of ``left_out``; all of them if nothing else is left."""
    attacked = [c["robust_psnr"] for c in cells if c["robust_psnr"] is not None and c["attack"] not in left_out]
    clean = [c["clean_psnr"] for c in cells if c["clean_psnr"] is not None] if clean_in else []
    values = attacked + clean or [c["robust_psnr"] for c in cells if c["robust_psnr"] is not None]
    return (min(values), max(values)) if values else (0.0, 1.0)


def _heatmap(ax, cells, title: str, scale: tuple[float, float]):
    import numpy as np

    ax.set_title(title, fontsize=9)
    if not cells:
        ax.axis("off")
        return None
    attacks = ["clean", *sorted({c["attack"] for c in cells} - {"ALL"}), "ALL"]
    defenses = _defense_order(c["defense"] for c in cells)
    grid = np.full((len(attacks), len(defenses)), np.nan)
    clean: dict[str, list[float]] = {}
    for c in cells:
        grid[attacks.index(c["attack"]), defenses.index(c["defense"])] = c["robust_psnr"]
        if c["clean_psnr"] is not None:
            clean.setdefault(c["defense"], []).append(c["clean_psnr"])
    for d, values in clean.items():  # the defended system on clean input, above the attacks
        grid[0, defenses.index(d)] = sum(values) / len(values)
    im = ax.imshow(grid, cmap="viridis", aspect="auto", vmin=scale[0], vmax=scale[1])
    ax.axhline(0.5, color="white", lw=2)  # the clean row is no attack
    ax.set_xticks(range(len(defenses)), defenses, fontsize=7, rotation=20)
    ax.set_yticks(range(len(attacks)), attacks, fontsize=8)
    middle = sum(scale) / 2
    for (i, j), v in np.ndenumerate(grid):
        if np.isfinite(v):  # dark text on the bright end of viridis, light on the dark end
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if v > middle else "white")
    return im


def _curves(engine, tid, norm: str, path: Path) -> Path:
    import matplotlib.pyplot as plt

    rows = [r for r in views.eps_curves(engine, tid, norm=norm) if r["attack"] == "ALL"]
    # scene threat models get panels of their own: their ε is radiance, never on one axis
    threats = ["oblivious", "adaptive", *sorted({r["threat"] for r in rows} - {"oblivious", "adaptive"})]
    fig, axes = plt.subplots(1, len(threats), figsize=(5.5 * len(threats), 4), sharey=True, squeeze=False)
    axes = axes[0]
    # a colour per defense (the undefended system first), a line style per restorer: the
    # 12 systems of the default tournament stay apart, and the legend says which is which
    defenses = _defense_order(r["defense"] for r in rows)
    restorers = sorted({r["restorer"] for r in rows})
    colours = {d: plt.get_cmap("tab10")(i % 10) for i, d in enumerate(defenses)}
    styles = {x: ("-", "--", ":", "-.")[i % 4] for i, x in enumerate(restorers)}
    for ax, threat in zip(axes, threats):
        part = [r for r in rows if r["threat"] == threat]
        for restorer in restorers:
            for defense in defenses:
                pts = sorted((r["eps"] * 255, r["robust_psnr"]) for r in part
                             if (r["restorer"], r["defense"]) == (restorer, defense))
                if pts:
                    ax.plot(*zip(*pts), marker="o", markersize=3, color=colours[defense], linestyle=styles[restorer])
        ax.set_title(threat)
        ax.set_xlabel(f"ε ({norm}, ×1/255)")
        ax.grid(alpha=0.3)
        if not part:
            ax.text(0.5, 0.5, f"no {threat} matches", ha="center", transform=ax.transAxes)
    axes[0].set_ylabel("robust PSNR (dB), worst case over attacks")
    from matplotlib.lines import Line2D

    handles = ([Line2D([], [], color=colours[d], lw=2, label=d) for d in defenses]
               + [Line2D([], [], color="black", linestyle=styles[x], lw=1.5, label=x) for x in restorers])
    fig.tight_layout(rect=(0, 0, 0.84, 1))
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(0.85, 0.5), fontsize=8, frameon=False,
               title="colour: defense\nline: restorer", title_fontsize=8)
    return _save(fig, path)


def _gallery_sheet(engine, tid, rows, db, path: Path, max_images: int = 4) -> Path | None:
    """One match's samples: the top system at the hardest budget, under its worst attack."""
    import matplotlib.pyplot as plt
    from PIL import Image

    found = views.gallery_matches(engine, tid)
    if not found:
        return None
    top = max((r for r in rows if r["rank"] is not None),
              key=lambda r: (r["threat"] == "adaptive", r["eps"], -r["rank"]), default=None)
    match = next((m for m in found if top and all(m[k] == top[k] for k in queries.GROUP)
                  and m["attack"] == top["worst_attack"]), found[0])
    images = views.gallery(engine, match["id"])[:max_images]
    kinds = SAMPLE_KINDS
    fig, axes = plt.subplots(len(images), len(kinds), squeeze=False, figsize=(2.1 * len(kinds), 2.6 * len(images)))
    for img, ax_row in zip(images, axes):
        for kind, ax in zip(kinds, ax_row):
            ax.axis("off")
            p = img["paths"].get(kind)
            p = sample_path(p, db) if p else None
            if p and p.is_file():
                ax.imshow(Image.open(p), interpolation="nearest")
            title = SAMPLE_TITLES[kind]
            if kind == "restored_clean" and img.get("clean_psnr") is not None:
                title += f"\n{img['clean_psnr']:.2f} dB"
            if kind == "restored_adv" and img.get("adv_psnr") is not None:
                title += f"\n{img['adv_psnr']:.2f} dB"
            ax.set_title(title, fontsize=8)
        ax_row[0].text(-0.1, 0.5, img["image"], rotation=90, ha="right", va="center",
                       fontsize=7, transform=ax_row[0].transAxes)
    fig.suptitle(f"{_budget_title(match)}: {match['restorer']} + {match['defense']} vs {match['attack']} "
                 f"(match {match['key']})", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
