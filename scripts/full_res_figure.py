"""The README's full-resolution figure from a finished tournament's gallery samples.

    .venv/bin/python scripts/full_res_figure.py RESULTS.db [--out docs/full-res.png]
        [--restorer unet] [--defense none] [--attack fgsm] [--image NAME] [--crop 256]

One image of one match: UDC input, restored, attacked input, restored attacked input. The
top row shows each whole frame (halved, to fit a page), the bottom row a crop at 1:1 from the
frame's centre, so the pixels the restorer produced at full size are visible. Captions carry
the stored PSNR/SSIM against the ground truth. The samples are the PNGs the driver saved
(`samples_per_match` > 0); nothing is recomputed. Colours are reduced to a 256-entry palette
so the file stays a few hundred KB.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from arena.display import sample_path
from arena.store import queries
from arena.store.db import open_reader

PANELS = (("lq", "UDC input"), ("restored_clean", "restored"), ("adv", "attacked input"),
          ("restored_adv", "restored attacked"))


def pick(engine, restorer: str, defense: str, attack: str) -> dict:
    for row in queries.matches(engine, status="done"):
        if (row["restorer"], row["defense"], row["attack"]) == (restorer, defense, attack):
            return row
    raise SystemExit(f"no finished match {restorer} / {defense} / {attack} in the database")


def caption(kind: str, score: dict) -> str:
    if kind == "restored_clean":
        return f"{score['clean_psnr']:.2f} dB, SSIM {score['clean_ssim']:.3f}"
    if kind == "restored_adv":
        return f"{score['adv_psnr']:.2f} dB, SSIM {score['adv_ssim']:.3f}"
    if kind == "adv":
        return f"L-inf {score['linf'] * 255:.1f}/255"
    return ""


def figure(db: str, out: Path, restorer: str, defense: str, attack: str, image: str | None, crop: int) -> Path:
    engine = open_reader(db)
    match = pick(engine, restorer, defense, attack)
    samples = {(s["image"], s["kind"]): s["path"] for s in queries.samples_of(engine, match["id"])}
    scores = {s["image"]: s for s in queries.scores_of(engine, match["id"])}
    image = image or sorted({i for i, _ in samples})[0]
    pics = [Image.open(sample_path(samples[(image, kind)], db)).convert("RGB") for kind, _ in PANELS]
    w, h = pics[0].size
    half = (w // 2, h // 2)
    box = ((w - crop) // 2, (h - crop) // 2, (w + crop) // 2, (h + crop) // 2)
    font = ImageFont.load_default(size=14)
    line, pad = 20, 6
    col = max(half[0], crop)
    sheet = Image.new("RGB", (4 * col + 5 * pad, 2 * line + half[1] + crop + line + 3 * pad), "white")
    draw = ImageDraw.Draw(sheet)
    top = 2 * line + pad
    for i, ((kind, title), pic) in enumerate(zip(PANELS, pics)):
        x = pad + i * (col + pad)
        draw.text((x, 2), title, fill="black", font=font)
        draw.text((x, line), caption(kind, scores[image]), fill="dimgray", font=font)
        sheet.paste(pic.resize(half, Image.LANCZOS), (x, top))
        sheet.paste(pic.crop(box), (x, top + half[1] + line + pad))
    draw.text((pad, top + half[1] + 2), f"{image}: whole {w}x{h} frame above (shown at half size), "
              f"its centre {crop}x{crop} at 1:1 below; {restorer}, defense {defense}, {attack}, "
              f"{match['threat']}", fill="black", font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, optimize=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("db")
    ap.add_argument("--out", type=Path, default=Path("docs/full-res.png"))
    ap.add_argument("--restorer", default="unet")
    ap.add_argument("--defense", default="none")
    ap.add_argument("--attack", default="fgsm")
    ap.add_argument("--image", default=None, help="an image id of the match (default: the first)")
    ap.add_argument("--crop", type=int, default=256)
    args = ap.parse_args()
    path = figure(args.db, args.out, args.restorer, args.defense, args.attack, args.image, args.crop)
    print(f"{path} ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
