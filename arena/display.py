"""What a person is shown of stored results, and where their files are: ε labels, plain
one-line text, the command that reproduces a match, the folder the driver writes sample images
to and where a stored sample is now.

Shared by the CLI, ``arena report`` and the dashboard, so that they word things alike; the
queries themselves (:mod:`arena.store`) know nothing of it. Imports neither torch nor Ray.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from arena.store.db import sqlite_path

#: the pictures the driver saves per sampled image, in the order they are shown; the scene
#: threat model's matches add SCENE_KINDS, and their ``adv`` is the rendered UDC input of the
#: perturbed scene (the batch that was scored)
SCENE_KINDS = ("scene_adv", "scene_delta")
SAMPLE_KINDS = ("lq", "adv", "delta", "restored_clean", "restored_adv", "hq", *SCENE_KINDS)
SAMPLE_TITLES = {
    "lq": "UDC input", "adv": "adversarial input (scene: rendered UDC input)",
    "delta": "perturbation (amplified)",
    "restored_clean": "restored (clean)", "restored_adv": "restored (adversarial)",
    "hq": "ground truth", "scene_adv": "perturbed scene (tone-mapped)",
    "scene_delta": "scene perturbation (amplified)",
}
#: the folder under the results folder that holds one folder of pictures per match key
SAMPLES = "samples"
#: terminal escape codes (CSI colours and cursor moves, OSC titles and links, lone escapes)
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]")


def eps_label(eps: float) -> str:
    """ε as a fraction of 255 where it is one (``8/255``), else as a decimal (``0.1``)."""
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{eps:.4g}"


def attack_variant(attack: str, frozen: bool = False, escalated: bool = False) -> str:
    """The attack's name, told apart from its frozen and escalated runs (arena/suite.py)."""
    return attack + (" (frozen)" if frozen else "") + (" (escalated)" if escalated else "")


def strip_ansi(text: str | None) -> str | None:
    """``text`` without terminal escape codes (a plugin's coloured traceback), for display;
    the stored text is left as it was written."""
    return ANSI.sub("", text) if text else text


def one_line(text: str | None, width: int = 100) -> str:
    """The first line of ``text``, without escape codes, cut to ``width`` characters."""
    lines = (strip_ansi(text) or "").strip().splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def reproduce_command(key: str, db: str | Path) -> str:
    """The shell command that recomputes one stored match."""
    return shlex.join(["arena", "reproduce", key, "--db", str(db)])


def results_dir(db: str | Path) -> Path:
    """Where the driver writes sample images: the folder of a SQLite database file, else (a
    database server, SQLite in memory) ``arena-results`` in the working directory."""
    path = sqlite_path(db)
    return path.parent if path is not None else Path("arena-results")


def sample_file(root: Path, key: str, image: str, kind: str) -> Path:
    """The picture ``kind`` of ``image`` in match ``key``, under the results folder ``root``."""
    return root / SAMPLES / key / f"{image}_{kind}.png"


def sample_path(stored: str, db: str | Path | None = None) -> Path:
    """Where a stored sample is now: as stored, or (for a relative path written from another
    working directory) under the SQLite database's folder, where the driver puts samples."""
    path = Path(stored)
    if path.is_file() or path.is_absolute() or db is None:
        return path
    db_file = sqlite_path(db)
    if db_file is not None and SAMPLES in path.parts:
        moved = db_file.parent.joinpath(*path.parts[path.parts.index(SAMPLES):])
        if moved.is_file():
            return moved
    return path
