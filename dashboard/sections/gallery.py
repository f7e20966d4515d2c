"""Gallery: what an attack does to the images of one match, from UDC input to restored output.

Matches are picked by threat model, ε, restorer, defense, attack and seed (the leaderboard links
here with those as query parameters); a second system can be shown beside the first, under the
same attack and image. Every picture kind the driver stored (arena.display.SAMPLE_KINDS) is
shown, plus a difference map of the two restored outputs.
"""

import io
import json
import math

import numpy as np
import streamlit as st
from PIL import Image

import common

#: pictures are shown at least this wide: small ones are enlarged by whole pixels
VIEW_PX = 256
#: query parameters the gallery reads, in picker order
PICKERS = ("threat", "eps", "restorer", "defense", "attack", "seed")

db, tid = common.db_url(), common.tournament_id()
display = common.display
st.title("Gallery")

found = common.view("gallery_matches", db, tid)
if not found:
    st.info("No match saved sample images (set samples_per_match in the tournament config).")
    st.stop()
for m in found:  # pickers and query parameters hold text: ε as 8/255 (its norm named unless ℓ∞)
    m["eps"] = display.eps_label(m["eps"]) if m["norm"] == "linf" else f"{m['norm']} {display.eps_label(m['eps'])}"
    m["seed"] = str(m["seed"])


def choose(col, label: str, field: str, rows: list[dict], key: str) -> str:
    """A picker over the values ``rows`` take in ``field``, opened on the query parameter."""
    values = list(dict.fromkeys(r[field] for r in rows))
    if field == "defense" and "none" in values:  # the undefended system first
        values.remove("none")
        values.insert(0, "none")
    wanted = st.query_params.get(field)
    index = values.index(wanted) if wanted in values else 0
    # the options are plain strings and the key is fixed: a new match never keeps old data
    return col.selectbox(label, values, index=index, key=key)


def pick_match(rows: list[dict], fixed: dict[str, str], prefix: str, cols) -> dict | None:
    chosen = dict(fixed)
    i = 0
    for field in PICKERS:
        rows = [r for r in rows if all(r[f] == v for f, v in chosen.items())]
        if field in fixed:
            continue
        chosen[field] = choose(cols[i], field if field != "eps" else "ε", field, rows, f"{prefix}-{field}")
        i += 1
    rows = [r for r in rows if all(r[f] == v for f, v in chosen.items())]
    if prefix == "gal":  # the address names what is shown: a link to it opens the same match
        st.query_params.update({f: chosen[f] for f in PICKERS})
    return rows[0] if rows else None


def enlarged(img: Image.Image) -> Image.Image:
    """Small images blown up by whole pixels: the browser would blur them, hiding the noise."""
    k = max(1, math.ceil(VIEW_PX / max(img.size)))
    return img.resize((img.width * k, img.height * k), Image.NEAREST)


def load(stored: str | None) -> Image.Image | None:
    path = display.sample_path(stored, db) if stored else None
    if path is None or not path.is_file():
        return None
    with Image.open(path) as img:
        return img.convert("RGB")


def difference(adv: Image.Image, clean: Image.Image) -> tuple[Image.Image, float]:
    """Restored attacked − restored clean, mid-grey at 0, scaled so the largest |difference|
    reaches black or white; returns the map and that largest difference (of 255)."""
    d = np.asarray(adv, dtype=np.float32) - np.asarray(clean, dtype=np.float32)
    peak = float(np.abs(d).max()) or 1.0
    return Image.fromarray(np.clip(127.5 + 127.5 * d / peak, 0, 255).astype(np.uint8)), peak


def captions(image: dict) -> dict[str, str]:
    linf, l2 = image.get("linf"), image.get("l2")
    return {
        "lq": "UDC input",
        "adv": (f"adversarial input (‖δ‖∞ = {linf * 255:.2f}/255"
                + (f", ‖δ‖₂ = {l2:.3f})" if l2 is not None else ")") if linf is not None else "adversarial input"),
        "delta": "perturbation, amplified to the full range",
        "restored_clean": f"restored, clean: {image['clean_psnr']:.2f} dB",
        "restored_adv": f"restored, attacked: {image['adv_psnr']:.2f} dB",
        "hq": "ground truth",
    }


def show(match: dict, image_name: str, where, per_row: int, width="stretch") -> None:
    """Every stored picture of one image of ``match``, and the difference map."""
    images = {i["image"]: i for i in common.view("gallery", db, match["id"])}
    image = images.get(image_name)
    if image is None:
        where.warning(f"{match['restorer']} + {match['defense']}: no samples of {image_name}.")
        return
    where.markdown(f"**{match['restorer']} + {match['defense']}** · {match['attack']} · seed {match['seed']}: "
                   f"{image['clean_psnr']:.2f} dB clean → {image['adv_psnr']:.2f} dB attacked")
    text = captions(image)
    tiles = []
    for kind in display.SAMPLE_KINDS:  # new kinds show with their stored title
        if kind in image["paths"]:
            pic = load(image["paths"][kind])
            title = text.get(kind) or display.SAMPLE_TITLES.get(kind, kind)
            tiles.append((pic, title if pic else f"{title}: file missing ({image['paths'][kind]})"))
    restored = [load(image["paths"].get(k)) for k in ("restored_adv", "restored_clean")]
    if all(restored):
        diff, peak = difference(*restored)
        tiles.append((diff, f"restored attacked − restored clean, ×{127.5 / peak:.1f} "
                            f"(black/white = ∓{peak:.0f}/255)"))
    for start in range(0, len(tiles), per_row):
        cols = where.columns(per_row)
        for col, (pic, title) in zip(cols, tiles[start:start + per_row]):
            if pic is None:
                col.warning(title)
            else:
                col.image(enlarged(pic), caption=title, width=width)


c = st.columns(len(PICKERS))
match = pick_match(found, {}, "gal", c)
images = common.view("gallery", db, match["id"])
names = [i["image"] for i in images]
i1, i2 = st.columns([2, 1])
wanted = st.query_params.get("image")
image_name = i1.selectbox(f"Image ({len(names)} stored)", names, key="gal-image",
                          index=names.index(wanted) if wanted in names else 0)
compare = i2.toggle("Compare with a second system", key="gal-compare",
                    help="Same threat model, ε, attack, seed and image; another restorer or defense.")
if compare:
    same = {f: match[f] for f in ("threat", "eps", "attack", "seed")}
    others = [r for r in found if all(r[f] == v for f, v in same.items()) and r["id"] != match["id"]]
    if not others:
        st.info("No other system has samples under this attack and budget.")
        compare = False
if compare:
    d1, d2 = st.columns(2)
    other = pick_match(others, same, "gal2", d2.columns(2))
    left, right = st.columns(2, border=True)
    show(match, image_name, left, 2)
    show(other, image_name, right, 2)
else:
    show(match, image_name, st.container(), 3, VIEW_PX)

st.caption("PSNR of the defended system's output against the ground truth. The amplified "
           "perturbation maps -ε..ε (ℓ∞) or the largest |δ| (ℓ2) onto black..white; the difference "
           f"map is mid-grey where the attack changed nothing. Pictures are enlarged to {VIEW_PX} px "
           "by whole pixels (nearest neighbour).")
st.code(display.reproduce_command(match["key"], db), language="bash")

st.subheader(f"Every image of this match ({len(images)})")
table = common.frame(images, ["image", "clean_psnr", "adv_psnr", "clean_ssim", "adv_ssim", "linf", "l2", "queries"])
table["drop_psnr"] = table["clean_psnr"] - table["adv_psnr"]
st.dataframe(table, hide_index=True, key="gal-scores", height=35 * (len(table) + 1) + 3,
             column_config={c: common.number(c, "%.4f" if "ssim" in c or c in ("linf", "l2") else "%.2f")
                            for c in ("clean_psnr", "adv_psnr", "drop_psnr", "clean_ssim", "adv_ssim", "linf", "l2")})
strip = st.columns(min(8, max(1, len(images))))
for k, img in enumerate(images):
    pic = load(img["paths"].get("restored_adv"))
    if pic is not None:
        strip[k % len(strip)].image(enlarged(pic), caption=f"{img['image']}: {img['adv_psnr']:.2f} dB",
                                    width="stretch")
d1, d2, d3 = st.columns(3)
d1.download_button("Per-image scores (CSV)", table.to_csv(index=False), file_name=f"scores-{match['key']}.csv",
                   mime="text/csv", key="gal-csv")
d2.download_button("Per-image scores (JSON)", json.dumps(table.to_dict("records"), default=str, indent=1),
                   file_name=f"scores-{match['key']}.json", mime="application/json", key="gal-json")
adv = common.query("adversarial", db, match["id"])
if adv is not None:
    buf = io.BytesIO()
    np.save(buf, adv)
    d3.download_button(f"Adversarial examples ({'×'.join(map(str, adv.shape))} float32, .npy)", buf.getvalue(),
                       file_name=f"adversarial-{match['key']}.npy", mime="application/octet-stream", key="gal-npy")
else:
    d3.caption("This match stored no adversarial batch.")
