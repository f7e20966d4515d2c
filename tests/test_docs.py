"""README_PLUGINS.md is executed, not just read.

The page marks its fenced blocks with an HTML comment on the line just before them:

    <!-- file: PATH -->       the block is written to PATH, relative to a scratch folder
    <!-- output -->           each line of the block must appear, in order, in what the shell block
                              before it printed (whitespace runs count as one space; a line
                              ``...`` skips any number of lines, ``...`` inside a line matches
                              anything)
    <!-- run -->              a python block, executed on its own
    <!-- no-run: reason -->   shown, not executed

Shell blocks run unless marked ``no-run``; every python block must carry one of the marks. The
commands a shell block may use are those a plugin author types: ``mkdir``, ``cd``, ``pip
install`` (run with ``--no-deps --no-build-isolation``, nothing is downloaded), ``arena``,
``pytest`` and ``python``. The tutorial's package is installed into a throwaway virtual
environment layered on this one (:class:`PluginEnv`), so the shared environment never sees it,
even when the test is killed half-way. README.md's python blocks marked ``<!-- run -->`` run too.
"""

from __future__ import annotations

import os
import re
import shlex
import site
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "README_PLUGINS.md"
COMMAND_TIMEOUT_S = 300

FENCE = re.compile(r"^```(\w*)\s*$")
MARK = re.compile(r"^<!--\s*(file|output|run|no-run)\b\s*:?\s*(.*?)\s*-->\s*$")


@dataclass
class Block:
    lang: str
    text: str
    line: int
    mark: str | None = None
    arg: str = ""


def parse_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, each with the mark on the line right before it."""
    lines = path.read_text().splitlines()
    blocks, mark, i = [], None, 0
    while i < len(lines):
        fence, marked = FENCE.match(lines[i]), MARK.match(lines[i])
        if marked:
            mark = (marked[1], marked[2])
        elif fence:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            text = "\n".join(lines[i + 1:end]) + "\n"
            blocks.append(Block(fence[1], text, i + 1, *(mark or (None, ""))))
            mark, i = None, end
        elif lines[i].strip():
            mark = None  # a mark belongs to the block directly below it, nothing further
        i += 1
    return blocks


def normalise(line: str) -> str:
    return " ".join(line.split())


def missing_output(expected: str, actual: str) -> str | None:
    """The first expected line not found (in order) in the actual output, or None."""
    got = [normalise(line) for line in actual.splitlines()]
    i = 0
    for want in (normalise(line) for line in expected.splitlines()):
        if not want or want == "...":
            continue
        pattern = re.compile(".*".join(re.escape(p) for p in re.split(r"\s*\.\.\.\s*", want)) + r"\Z")
        while i < len(got) and not pattern.match(got[i]):
            i += 1
        if i == len(got):
            return want
        i += 1
    return None


class PluginEnv:
    """A virtual environment layered on the running one.

    It sees every package installed here (udc-arena included, through a ``.pth`` file that adds
    this environment's site-packages), while what is pip-installed into it stays in it. Other
    test sessions sharing this environment never see the throwaway plugins, and nothing needs
    uninstalling: deleting the folder is the teardown.
    """

    def __init__(self, root: Path):
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
        self.python = str(root / ("Scripts" if os.name == "nt" else "bin") / "python")
        purelib = subprocess.run(
            [self.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True).stdout.strip()
        parents = "".join(f"import site; site.addsitedir({p!r})\n" for p in site.getsitepackages())
        Path(purelib, "_arena_parent_env.pth").write_text(parents)
        drop = {"ARENA_PLUGINS", "ARENA_BLOCK_PLUGINS", "ARENA_DB", "PYTHONPATH", "VIRTUAL_ENV"}
        self.env = {k: v for k, v in os.environ.items() if k not in drop}
        self.env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")

    def argv(self, words: list[str]) -> list[str]:
        """The command a plugin author types, as run in this environment."""
        head, rest = words[0], words[1:]
        if head == "pip" and rest[:1] == ["install"]:
            return [self.python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", *rest[1:]]
        if head == "arena":
            return [self.python, "-m", "arena.cli", *rest]
        if head == "pytest":
            return [self.python, "-m", "pytest", "-p", "no:cacheprovider", *rest]
        if head == "python":
            return [self.python, *rest]
        raise ValueError(f"command '{head}' is not one the doc test runs: mark the block "
                         "<!-- no-run: reason --> or extend PluginEnv.argv")

    def run(self, argv: list[str], cwd: Path, env: dict[str, str] | None = None):
        return subprocess.run(argv, cwd=cwd, env={**self.env, **(env or {})}, capture_output=True,
                              text=True, timeout=COMMAND_TIMEOUT_S)


@dataclass
class Walk:
    """What executing the page produced."""

    root: Path
    outputs: list[tuple[str, str]] = field(default_factory=list)  # (command, stdout)
    failure: str | None = None


def run_shell_block(penv: PluginEnv, block: Block, state: dict) -> str:
    """Run a shell block line by line; return what its commands printed on stdout."""
    printed = []
    for line in block.text.splitlines():
        words = shlex.split(line, comments=True)
        while words:
            n = words.index("&&") if "&&" in words else len(words)
            command, words = words[:n], words[n + 1:]
            env = {}
            while command and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", command[0]):
                key, value = command.pop(0).split("=", 1)
                env[key] = value
            if command[0] == "mkdir":
                for d in (w for w in command[1:] if not w.startswith("-")):
                    (state["cwd"] / d).mkdir(parents=True, exist_ok=True)
            elif command[0] == "cd":
                state["cwd"] = (state["cwd"] / command[1]).resolve()
            else:
                done = penv.run(penv.argv(command), state["cwd"], env)
                printed.append(done.stdout)
                if done.returncode != 0:
                    raise AssertionError(
                        f"README_PLUGINS.md line {block.line}: `{' '.join(command)}` exited with "
                        f"{done.returncode}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")
    return "".join(printed)


@pytest.fixture(scope="module")
def walk(tmp_path_factory) -> Walk:
    """Write every file, run every shell block and compare every output block, in page order."""
    root = tmp_path_factory.mktemp("tutorial")
    penv = PluginEnv(tmp_path_factory.mktemp("tutorial-env") / "venv")
    result, state, last = Walk(root), {"cwd": root}, None
    try:
        for block in parse_blocks(PAGE):
            if block.mark == "file":
                path = root / block.arg
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(block.text)
            elif block.mark == "output":
                assert last is not None, f"line {block.line}: an output block with no command before it"
                lost = missing_output(block.text, last)
                assert lost is None, (f"README_PLUGINS.md line {block.line}: expected output line "
                                      f"{lost!r} not printed; the commands printed:\n{last}")
            elif block.lang in ("bash", "sh", "shell") and block.mark != "no-run":
                last = run_shell_block(penv, block, state)
                result.outputs.append((block.text.strip(), last))
    except (AssertionError, subprocess.TimeoutExpired, ValueError) as exc:
        result.failure = str(exc)
    return result



def test_every_block_is_executed_or_says_why_not():
    blocks = parse_blocks(PAGE)
    assert blocks, "README_PLUGINS.md has no code blocks"
    for b in blocks:
        if b.lang == "python":
            assert b.mark in ("file", "run", "no-run"), (
                f"README_PLUGINS.md line {b.line}: a python block needs <!-- file: PATH -->, "
                "<!-- run --> or <!-- no-run: reason -->")
        if b.mark == "no-run":
            assert b.arg, f"README_PLUGINS.md line {b.line}: no-run needs a reason"
        if b.mark == "file":
            assert b.arg and not Path(b.arg).is_absolute() and ".." not in Path(b.arg).parts
    written = {b.arg for b in blocks if b.mark == "file"}
    assert {"arena-tutorial/pyproject.toml", "arena-tutorial/arena_nifgsm.py",
            "arena-tutorial/arena_blur.py"} <= written


def test_the_tutorial_components_stay_short():
    """The house promise: a gradient attack under 40 lines, an input defense under 30."""
    files = {b.arg: b.text for b in parse_blocks(PAGE) if b.mark == "file"}
    for path, limit in (("arena-tutorial/arena_nifgsm.py", 40), ("arena-tutorial/arena_blur.py", 30)):
        lines = [ln for ln in files[path].splitlines() if ln.strip()]
        assert len(lines) < limit, f"{path} has {len(lines)} non-blank lines (limit {limit})"


def test_output_matching_can_fail():
    assert missing_output("a\n...\nc d ...\n", "a\nb\nc   d e\n") is None
    assert missing_output("c\na\n", "a\nb\nc\n") == "a"
    assert missing_output("x ... y\n", "x y\n") is None
    assert missing_output("x ... z\n", "x y\n") == "x ... z"


@pytest.mark.slow
def test_tutorial_commands_run_and_print_what_the_page_shows(walk):
    assert walk.failure is None, walk.failure
    commands = "\n".join(c for c, _ in walk.outputs)
    for expected in ("pip install -e .", "arena plugins", "arena plugins check nifgsm",
                     "pytest -q tests", "arena run tutorial.toml"):
        assert expected in commands, f"the tutorial no longer runs `{expected}`"


@pytest.fixture(scope="module")
def tutorial_db(walk):
    if walk.failure is not None:
        pytest.fail(f"the tutorial did not run to its end: {walk.failure}")
    from arena.store.db import open_reader

    path = walk.root / "arena-tutorial" / "tutorial.db"
    assert path.exists(), "the tutorial's `arena run` wrote no database"
    return open_reader(str(path))


@pytest.mark.slow
def test_the_attack_and_the_defense_compete_in_the_tournament(tutorial_db):
    from arena.store import queries

    rows = queries.matches(tutorial_db)
    assert len(rows) == 12
    assert {r["status"] for r in rows} == {"done"}, [(r["attack"], r["reason"]) for r in rows if r["status"] != "done"]
    assert {r["attack"] for r in rows} == {"fgsm", "nifgsm"}
    assert {r["defense"] for r in rows} == {"none", "jpeg", "blur"}
    for r in rows:
        if r["attack"] == "nifgsm":
            assert r["versions"]["attack:nifgsm"].startswith("arena-tutorial 0.1.0 ")
            assert r["attack_kind"] == "white-box"
            assert r["gradient_calls"] == r["steps"] == 10  # one gradient per Nesterov step
        if r["defense"] == "blur":
            assert r["versions"]["defense:blur"].startswith("arena-tutorial 0.1.0 ")


@pytest.mark.slow
def test_the_dashboard_queries_show_the_plugin(tutorial_db):
    from arena.store import views

    board = views.leaderboard(tutorial_db)
    systems = {(r["restorer"], r["defense"]) for r in board}
    assert systems == {(r, d) for r in ("identity", "tiny") for d in ("none", "jpeg", "blur")}
    for r in board:
        assert r["n_attacks"] == 2 and r["n_images"] == 4
        assert r["robust_psnr"] < r["clean_psnr"]
        # NI-FGSM iterates under the same budget: it must not be weaker than one FGSM step
        assert "weaker-than-fgsm" not in r["flags"], r["flags"]
    ranking = {r["attack"]: r for r in views.attack_ranking(tutorial_db)}
    assert ranking["nifgsm"]["n_systems"] == 6
    assert ranking["nifgsm"]["damage_psnr"] > 0.5
    options = views.options(tutorial_db)
    assert "nifgsm" in options["attack"] and "blur" in options["defense"]


SNIPPETS = [b for b in parse_blocks(PAGE) if b.mark == "run"]


@pytest.mark.parametrize("block", SNIPPETS, ids=[f"line{b.line}" for b in SNIPPETS])
def test_runnable_snippet(block):
    assert block.lang == "python", f"line {block.line}: only python blocks can be marked run"
    exec(compile(block.text, f"{PAGE.name}:{block.line}", "exec"), {"__name__": "__snippet__"})


def test_the_page_has_runnable_snippets():
    assert len(SNIPPETS) >= 3  # restorer, hardening defense, unavailable component


README_SNIPPETS = [b for b in parse_blocks(ROOT / "README.md") if b.mark == "run"]


@pytest.mark.parametrize(
    "block",
    README_SNIPPETS or [pytest.param(None, marks=pytest.mark.skip(reason="README.md marks no block <!-- run -->"))],
    ids=[f"line{b.line}" for b in README_SNIPPETS] or ["none"],
)
def test_readme_runnable_snippet(block):
    assert block.lang == "python", f"README.md line {block.line}: only python blocks can be marked run"
    exec(compile(block.text, f"README.md:{block.line}", "exec"), {"__name__": "__snippet__"})


def anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_internal_links_point_at_headings():
    text = PAGE.read_text()
    headings = {anchor(m[1]) for m in re.finditer(r"^#+ (.+)$", text, flags=re.M)}
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links, "the page links none of its sections"
    assert links <= headings, f"links to no heading: {sorted(links - headings)}"
