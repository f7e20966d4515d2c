"""`arena …` commands."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click

from arena.store.db import DEFAULT_DB

DB_OPTION = click.option(
    "--db", default=lambda: os.environ.get("ARENA_DB", DEFAULT_DB), show_default=DEFAULT_DB,
    help="SQLite file path or SQLAlchemy URL (env ARENA_DB).",
)


class ArenaGroup(click.Group):
    """Turns the arena's own user-facing errors into one clean line instead of a traceback, and
    adds the plugins' commands (hook ``register_commands``) once, when they are first needed:
    a command of the core is found without importing every plugin."""

    plugin_commands_loaded = False

    def load_plugin_commands(self) -> None:
        if not self.plugin_commands_loaded:
            self.plugin_commands_loaded = True
            from arena.plugins import load_commands

            _plugin_warnings_to_stderr(clear=False)
            load_commands(self)

    def get_command(self, ctx, cmd_name):
        command = super().get_command(ctx, cmd_name)
        if command is None:
            self.load_plugin_commands()
            command = super().get_command(ctx, cmd_name)
        return command

    def list_commands(self, ctx):
        self.load_plugin_commands()
        return super().list_commands(ctx)

    def invoke(self, ctx):
        from arena.errors import ArenaError  # the base of every user-facing error (arena.api)

        _plugin_warnings_to_stderr()
        try:
            return super().invoke(ctx)
        except ArenaError as exc:
            raise click.ClickException(str(exc)) from None


class _OncePerCommand(logging.Handler):
    """Prints each plugin warning as one line on stderr, once, however often the registry loads."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.seen: set[str] = set()

    def emit(self, record):
        message = record.getMessage()
        if message not in self.seen:
            self.seen.add(message)
            click.echo(f"warning: {message}", err=True)


_PLUGIN_WARNINGS = _OncePerCommand()


def _plugin_warnings_to_stderr(clear: bool = True) -> None:
    if clear:
        _PLUGIN_WARNINGS.seen.clear()  # a new command (CliRunner reuses the process) warns again
    logger = logging.getLogger("arena.plugins")
    if _PLUGIN_WARNINGS not in logger.handlers:
        logger.addHandler(_PLUGIN_WARNINGS)


@click.group(cls=ArenaGroup)
@click.version_option(package_name="udc-arena")
@click.option("--strict", is_flag=True,
              help="A plugin that fails to import or register is an error, not a warning.")
def main(strict):
    """udc-arena: UDC restorers, adversarial attacks and defenses in one tournament."""
    # set on every command, so no run inherits an earlier one's flag; but arena.plugins pulls in
    # torch (through arena.api), so a command of the store alone (leaderboard) must not import
    # it just to leave the default in place
    if strict or "arena.plugins" in sys.modules:
        from arena import plugins

        plugins.STRICT = strict


LEADERBOARD_COLUMNS = ["rank", "restorer", "defense", "clean_psnr", "clean_ssim", "robust_psnr",
                       "robust_ssim", "drop_psnr", "worst_attack", "n_images", "counts", "flags"]
# not ranked: the unverified block keeps its numbers, the unranked one (incomplete) shows none
UNVERIFIED_COLUMNS = ["restorer", "defense", "clean_psnr", "robust_psnr", "robust_ssim", "worst_attack",
                      "counts", "flags", "why"]
UNRANKED_COLUMNS = ["restorer", "defense", "counts", "why"]
#: every key of `arena leaderboard --format json|csv`, in order (README.md, "Leaderboard JSON")
LEADERBOARD_KEYS = ["threat", "norm", "eps", "restorer", "defense", "rank", "status", "why",
                    "clean_psnr", "clean_ssim", "robust_psnr", "robust_ssim", "robust_psnr_worst",
                    "robust_psnr_mean", "robust_psnr_fixed", "robust_psnr_single", "drop_psnr", "drop_ssim",
                    "worst_attack", "n_images", "n_attacks", "n_seeds", "robust_psnr_seed_mean",
                    "robust_psnr_seed_std", "planned", "done", "pending", "failed", "disqualified",
                    "skipped", "attack_blamed", "not_converged", "escalated", "lower_bound", "defense_ms_per_mp",
                    "attack_ms_per_mp", "peak_mem_mb", "flags"]
FORMAT = click.Choice(["table", "json", "csv"])


def _counts(r: dict) -> str:
    """"5/6 done, 1 failed": done (and verified) out of the non-skipped planned matches."""
    parts = [f"{r['done']}/{r['planned'] - r['skipped']} done"]
    return ", ".join(parts + [f"{r[k]} {k}" for k in ("pending", "failed", "disqualified", "skipped") if r[k]])


def print_leaderboard(db: str, tournament_id: int | None = None, threat: str | None = None,
                      fmt: str = "table") -> None:
    import csv
    import io

    from arena.display import eps_label
    from arena.store import queries, views
    from arena.store.db import open_reader

    engine = open_reader(db)
    rows = [{k: r.get(k) for k in LEADERBOARD_KEYS} for r in views.leaderboard(engine, tournament_id, threat=threat)]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, LEADERBOARD_KEYS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        click.echo(out.getvalue(), nl=False)
        return
    if not rows:
        click.echo("no matches stored yet")
        return
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r["threat"], r["norm"], r["eps"]), []).append(r)
        r["counts"] = _counts(r)
        # the terminal gets flag names; reasons are on the dashboard
        r["flags"] = ", ".join(sorted({f.split(":")[0] for f in r["flags"].split("; ") if f}))
    for (threat_, norm, eps), members in groups.items():
        click.echo(f"\n== {threat_} | {norm} eps={eps_label(eps)} ==")
        ranked = [r for r in members if r["status"] == "ranked"]
        click.echo(queries.format_table(ranked, LEADERBOARD_COLUMNS) if ranked else "(no ranked system)")
        for status, title, columns in (
                ("unverified", "unverified: masked gradients, not ranked until a gradient-free attack has run",
                 UNVERIFIED_COLUMNS),
                ("unranked", "unranked (incomplete): a match failed, not blamed on the attack, or is pending",
                 UNRANKED_COLUMNS)):
            block = [r for r in members if r["status"] == status]
            if block:
                click.echo(f"\n{title} ({len(block)}):")
                click.echo(queries.format_table(block, columns))


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@DB_OPTION
@click.option("--executor", type=click.Choice(["ray", "local"]), default="ray", show_default=True,
              help="ray: local Ray or --address cluster; local: in this process, one worker.")
@click.option("--address", default=None, help="Ray cluster: 'auto' or ray://HOST:PORT (default: start Ray locally).")
@click.option("--dry-run", is_flag=True, help="Print the plan and run nothing.")
@click.option("--rerun-failed", is_flag=True, help="Retry matches stored as failed.")
@click.option("--device", default=None, help="Device for the local executor (cpu, cuda).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run(config, db, executor, address, dry_run, rerun_failed, device, quiet):
    """Plan and run a tournament CONFIG (TOML); print its leaderboard."""
    from arena.plan import plan, read_config
    from arena.plugins import load_registry
    from arena.run.driver import run_tournament, summarise_plan

    t = read_config(config)
    registry = load_registry()
    if dry_run:
        click.echo(summarise_plan(plan(t, registry), registry))
        return
    report = run_tournament(t, db, executor=executor, address=address, rerun_failed=rerun_failed,
                            device=device, progress=not quiet, registry=registry)
    counts = ", ".join(f"{n} {k}" for k, n in sorted(report.counts.items())) or "nothing new"
    click.echo(f"tournament {t.name!r}: {report.planned} matches planned; this run: {counts}; "
               f"already stored: {report.resumed}")
    print_leaderboard(db, report.tournament_id)
    click.echo(f"\nresults database: {db}")
    click.echo(f"dashboard:        arena dashboard --db {db}")


def _threat_name(value: str | None) -> str | None:
    if value is None:
        return None
    from arena.threat import check_threat

    try:
        return check_threat(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command()
@DB_OPTION
@click.option("--threat", default=None, callback=lambda ctx, p, v: _threat_name(v),
              help="oblivious, adaptive, scene or scene-patch-<percent>.")
@click.option("--tournament", type=int, default=None, help="Tournament id (default: the latest).")
@click.option("--all", "all_matches", is_flag=True, help="Rank every stored match, whichever tournament.")
@click.option("--format", "fmt", type=FORMAT, default="table", show_default=True,
              help="json/csv: one object/line per system with the keys in README.md, 'Leaderboard JSON'.")
def leaderboard(db, threat, tournament, all_matches, fmt):
    """Print the ranking: clean vs robust PSNR/SSIM per restorer and defense.

    Only complete systems are ranked (every match done and verified, failures of the attack's
    own making aside); the unverified and unranked ones follow with their counts and reasons.
    """
    from arena.store import queries
    from arena.store.db import open_reader

    if tournament is None and not all_matches:
        tournament = queries.latest_tournament_id(open_reader(db))
    print_leaderboard(db, tournament, threat, fmt)


def _statuses(ctx, param, values) -> list[str]:
    from arena.store.views import MATCH_STATUSES

    out = [s.strip() for v in values for s in v.split(",") if s.strip()]
    bad = [s for s in out if s not in MATCH_STATUSES]
    if bad:
        raise click.BadParameter(f"{', '.join(bad)} (choose from {', '.join(MATCH_STATUSES)})")
    return out


@main.command("matches")
@DB_OPTION
@click.option("--status", "statuses", multiple=True, callback=_statuses,
              help="done, pending (done, not verified), failed, disqualified, skipped; "
                   "repeat or comma-separate (default: every match).")
@click.option("--tournament", type=int, default=None, help="Tournament id (default: the latest).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--full", is_flag=True, help="Each match's whole reason and stored error (traceback).")
def matches_command(db, statuses, tournament, fmt, full):
    """List matches with their status, blame and reason (escape codes stripped)."""
    from arena.display import eps_label, one_line, strip_ansi
    from arena.store import queries, views
    from arena.store.db import open_reader

    engine = open_reader(db)
    if tournament is None:
        tournament = queries.latest_tournament_id(engine)
    rows = views.match_list(engine, tournament, statuses)
    for r in rows:
        r["reason"], r["error"] = strip_ansi(r["reason"]), strip_ansi(r["error"])
        r["system"] = f"{r['restorer']} + {r['defense']}"
        r["budget"] = f"{r['threat']} {r['norm']} eps={eps_label(r['eps'])}"
    if fmt == "json":
        keys = ["key", "tournament_id", "threat", "norm", "eps", "restorer", "defense", "attack", "attack_kind",
                "seed", "status", "blame", "verified", "reason", "error", "attempts"]
        click.echo(json.dumps([{k: r[k] for k in keys} for r in rows], indent=2, default=str))
    elif not rows:
        click.echo("no matches of that status")
    elif full:
        for r in rows:
            blame = f" (blame: {r['blame']})" if r["blame"] else ""
            click.echo(f"\n== {r['key']}  {r['budget']}  {r['system']}  vs {r['attack']}: {r['status']}{blame}")
            if r["reason"]:
                click.echo(f"reason: {r['reason']}")
            if r["error"] and r["error"] != r["reason"]:
                click.echo(r["error"].rstrip("\n"))
    else:
        for r in rows:
            r["reason"] = one_line(r["reason"])
        click.echo(queries.format_table(rows, ["key", "budget", "system", "attack", "status", "blame", "reason"]))


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable listing.")
@click.pass_context
def plugins(ctx, as_json):
    """List every registered restorer, attack and defense."""
    if ctx.invoked_subcommand is not None:
        return
    from arena.plugins import describe, load_registry

    registry = load_registry()
    infos = [describe(e) for e in registry.all()]
    if as_json:  # a broken plugin is one more item, shaped like a component's, with "broken" set
        infos += [{"role": "plugin", "name": p, "plugin": p, "kind": "broken", "summary": "",
                   "params": {}, "package": "", "version": "", "broken": why}
                  for p, why in sorted(registry.broken.items())]
        click.echo(json.dumps(infos, indent=2, default=str))
        return
    _print_components(infos)
    if registry.broken:
        click.echo("\nbroken plugins (left out; `arena --strict` makes this an error):")
        for p, why in sorted(registry.broken.items()):
            click.echo(f"  {p:<20} {why}")


def _print_components(infos: list[dict]) -> None:
    for role in ("restorer", "attack", "defense"):
        click.echo(f"\n{role}s:")
        for i in (i for i in infos if i["role"] == role):
            source = f"{i['package']} {i['version']}".strip()
            status = f"  UNAVAILABLE: {i['unavailable']}" if i.get("unavailable") else ""
            click.echo(f"  {i['name']:<20} [{i['kind']}]  from {source}{status}")
            if i["summary"]:
                click.echo(f"      {i['summary']}")
            if i["params"]:
                click.echo("      params: " + ", ".join(f"{k}={v!r}" for k, v in i["params"].items()))


@main.command()
@DB_OPTION
@click.option("--port", default=8501, show_default=True, type=int)
def dashboard(db, port):
    """Start the Streamlit dashboard on 127.0.0.1 over the database, read-only."""
    from arena.store.db import open_reader, sqlite_path

    if sqlite_path(db) is None or sqlite_path(db).exists():  # a file not yet written: the app waits for it
        open_reader(db)  # refuse a foreign database before starting a server
    app = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
    env = dict(os.environ, ARENA_DB=db)
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", "127.0.0.1",
           "--server.port", str(port), "--server.headless", "true",
           "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal"]
    click.echo(f"dashboard on http://127.0.0.1:{port} (database {db}, read-only)")
    os.execvpe(cmd[0], cmd, env)


@plugins.command("check")
@click.argument("name")
@click.option("--timeout", type=click.FloatRange(min=0), default=120, show_default=True,
              help="Seconds each role's checks may take (0: no limit).")
def plugins_check(name, timeout):
    """Run the conformance checks on an installed component NAME; list what fails."""
    from arena import testing
    from arena.plugins import load_registry

    registry = load_registry()
    found = [e for role in ("restorer", "attack", "defense") for e in [registry.entries[role].get(name)] if e]
    if not found:
        note = f"; {registry.broken_note()}" if registry.broken else ""
        raise click.ClickException(f"no installed restorer, attack or defense is called '{name}'{note}")
    failed = False
    for entry in found:
        problems = testing.run_check(entry.cls, entry.role, timeout or None)
        source = f"{entry.package} {entry.version}".strip()
        if problems:
            failed = True
            click.echo(f"{entry.role} '{name}' ({source}) fails {len(problems)} check(s):")
            for p in problems:  # one line each, whatever the plugin put in its message
                click.echo(f"FAIL {entry.role} '{name}': {' '.join(p.split())}")
        else:
            click.echo(f"{entry.role} '{name}' ({source}) passes every conformance check")
    if failed:
        sys.exit(1)


@main.command()
@click.argument("key")
@DB_OPTION
@click.option("--device", default=None)
def reproduce(key, db, device):
    """Re-run one stored match (KEY or a unique prefix) alone and compare its scores."""
    from arena.store.db import open_reader
    from arena.verify import reproduce as run_again

    r = run_again(open_reader(db), key, device)
    click.echo(f"match {r['key']}: stored {r['stored_adv_psnr']:.4f} dB on {r['stored_device']}, "
               f"rerun {r['rerun_adv_psnr']:.4f} dB on {r['device']}; largest per-image difference "
               f"{r['max_abs_diff_db']:.2e} dB (tolerance {r['tolerance_db']:g}); adversarial batch "
               f"differs from the stored one by {r['max_adv_diff']:.2e} at most (tolerance {r['adv_tolerance']:g})")
    click.echo("reproduced" if r["same"] else "NOT reproduced")
    sys.exit(0 if r["same"] else 1)


@main.command()
@DB_OPTION
@click.option("--sample", default=4, show_default=True, help="How many iterative matches to re-run.")
@click.option("--tolerance", default=0.5, show_default=True, help="dB a 2x-steps rerun may move the score.")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default=None)
def verify(db, sample, tolerance, seed, device):
    """Re-run a sample of matches at twice the steps with new seeds; flag unconverged ones."""
    from arena.flags import store_flags
    from arena.store import queries
    from arena.store.db import open_writer
    from arena.verify import not_converged_flags, verify as check

    engine = open_writer(db)
    results = check(engine, sample, seed, tolerance, device)
    store_flags(engine, not_converged_flags(results, tolerance), rerun=True)
    click.echo(queries.format_table(results, ["key", "restorer", "defense", "attack", "threat", "eps",
                                              "adv_psnr", "adv_psnr_2x", "moved_db", "converged"]))
    bad = sum(not r["converged"] for r in results)
    click.echo(f"{len(results) - bad} of {len(results)} converged (tolerance {tolerance} dB)")


@main.command("min-eps")
@click.option("--restorer", required=True)
@click.option("--defense", default="none", show_default=True, help="A defense or a chain (jpeg>diffpure).")
@click.option("--attack", default="apgd", show_default=True, help="A white-box attack.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="an attack parameter (value parsed as JSON, else a string); repeatable")
@click.option("--floor", type=float, default=None, help="Broken below this PSNR, dB.")
@click.option("--drop", type=float, default=None, help="Broken below clean PSNR minus this, dB (default 3).")
@click.option("--norm", type=click.Choice(["linf", "l2"]), default="linf", show_default=True)
@click.option("--lo", default="0", show_default=True, help="Lower end of the bracket (number or 'a/b').")
@click.option("--hi", default=None, help="Upper end (number or 'a/b'; default 32/255 for linf, 4 for l2).")
@click.option("--steps", default=20, show_default=True, help="Attack iterations at every probe.")
@click.option("--bisections", default=8, show_default=True, help="Halvings of each image's bracket.")
@click.option("--threat", type=click.Choice(["adaptive", "oblivious"]), default="adaptive", show_default=True)
@click.option("--eot", default=4, show_default=True, help="EOT draws per gradient (random defense, adaptive).")
@click.option("--images", default=8, show_default=True)
@click.option("--size", default=32, show_default=True)
@click.option("--data", "data_name", default="embedded", show_default=True)
@click.option("--data-root", default=None)
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default=None)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def min_eps_command(params, images, size, data_name, data_root, device, fmt, **options):
    """Per image, the smallest ε at which the attack breaks the system (bisection); the median."""
    from arena.min_eps import as_json, as_table, min_eps, search_spec
    from arena.train import parse_params

    spec = search_spec(attack_params=parse_params(params), **options,
                       data={"name": data_name, "root": data_root, "images": images, "size": size})
    result = min_eps(spec, device=device)
    click.echo(json.dumps(as_json(result), indent=2) if fmt == "json" else as_table(result))


@main.group()
def data():
    """The embedded UDC benchmark and real datasets."""


@data.command("preview")
@click.option("--out", default="data-preview.png", show_default=True)
@click.option("-n", default=4, show_default=True)
@click.option("--size", default=64, show_default=True)
@click.option("--seed", default=0, show_default=True)
def data_preview(out, n, size, seed):
    """Write a PNG sheet: ground truth, UDC image, PSF (log scale) per sample."""
    from arena.data import preview

    click.echo(preview(out, n=n, size=size, seed=seed))


@data.command("check")
@click.option("--format", "fmt", type=click.Choice(["discnet", "poled", "toled"]), required=True)
@click.option("--root", required=True, type=click.Path())
def data_check(fmt, root):
    """Validate a real dataset on disk; report what is wrong in plain words."""
    from arena.data import check_dataset

    from arena.data.real import summarise_real

    problems = check_dataset(fmt, root)
    for line in summarise_real(fmt, root):  # what was found, problems or not
        click.echo(line)
    for p in problems:
        click.echo(f"- {p}")
    if problems:
        raise click.ClickException(f"{len(problems)} problem(s) in {root}")
    click.echo(f"{root}: a valid {fmt} dataset")


@main.command()
@click.argument("restorer")
@click.option("--steps", default=3000, show_default=True)
@click.option("--out", default=".", show_default=True, help="folder for <restorer>.safetensors and .json")
@click.option("--seed", default=0, show_default=True)
@click.option("--size", default=64, show_default=True, help="training sample and test image side")
@click.option("--crop", type=int, default=None,
              help="random crop side (default: size; larger with --synth-share 1, up to 258 at size 64)")
@click.option("--batch", default=8, show_default=True)
@click.option("--lr", default=1e-3, show_default=True)
@click.option("--data", default="embedded", show_default=True)
@click.option("--data-root", default=None)
@click.option("--data-seeds", default=4, show_default=True, help="embedded draws of crops/noise")
@click.option("--synth-share", default=0.5, show_default=True,
              help="share of each batch resynthesised from the training scenes")
@click.option("--procedural", default=0.0, show_default=True,
              help="share of the resynthesised pairs drawn from dead-leaves scenes")
@click.option("--scenes", type=click.Choice(["train", "train+extra"]), default="train+extra",
              show_default=True, help="embedded training photographs: the train split's, or with "
              "the extra ones installed packages ship")
@click.option("--amp", type=click.Choice(["auto", "off", "bf16", "fp16"]), default="auto",
              show_default=True, help="autocast precision (auto: bf16 or fp16 on CUDA, off on CPU)")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=None,
              help="seconds of training after which the run stops early (a safety net)")
@click.option("--device", default=None, help="cpu, cuda, … (default: cuda when available)")
@click.option("--threads", type=int, default=None)
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="a restorer parameter (value parsed as JSON, else a string); repeatable")
@click.option("--no-resume", is_flag=True, help="start again instead of resuming a checkpoint")
@click.option("--quiet", is_flag=True, help="no progress bar")
def train(restorer, out, params, no_resume, quiet, **options):
    """Train a restorer on UDC pairs; write <restorer>.safetensors and its manifest to --out."""
    from arena.train import parse_params, train_restorer
    from arena.weights import read_manifest

    path = train_restorer(restorer, out_dir=out, params=parse_params(params), resume=not no_resume,
                          progress=not quiet, **options)
    m = read_manifest(path)
    click.echo(f"{path}: clean PSNR {m['clean_psnr']:.2f} dB, SSIM {m['clean_ssim']:.4f} "
               f"(input {m['input_psnr']:.2f} dB) on {m['data_version']} test, {m['wall_time_s']:.0f} s")


@main.group()
def weights():
    """Restorer weights: enter checkpoints trained elsewhere."""


@weights.command("import")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--restorer", required=True, help="The restorer whose architecture the checkpoint holds.")
@click.option("--out", default=None, help="Output .safetensors (default: CHECKPOINT-RESTORER.safetensors beside it).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="a restorer parameter (value parsed as JSON, else a string); repeatable")
def weights_import(checkpoint, restorer, out, params):
    """Load CHECKPOINT (.pth/.pt/.ckpt without running code, or .safetensors) strictly into
    RESTORER; write safetensors and a manifest, for `weights = "PATH"` in a tournament config."""
    from arena.checkpoint import import_weights
    from arena.train import parse_params
    from arena.weights import read_manifest

    path = import_weights(checkpoint, restorer, out, parse_params(params))
    m = read_manifest(path)
    click.echo(f"{path}: {m['architecture']}, {m['params']:,} parameters, from {m['source']['file']} "
               f"(sha256 {m['source']['sha256'][:12]}…)")
    extra = "".join(f", {k} = {json.dumps(v)}" for k, v in m["restorer_params"].items())
    click.echo(f'tournament config: restorers = [{{ name = "{restorer}", weights = "{path}"{extra} }}]')


@main.command()
@click.argument("names", nargs=-1)
@click.option("--device", default=None, help="cpu, cuda, … (default: cuda when available)")
def zoo(names, device):
    """Score every restorer with shipped weights on the test split; print the README table."""
    from arena.zoo import zoo_table

    click.echo(zoo_table(list(names) or None, device=device))


@main.command()
@DB_OPTION
@click.option("--out", default="arena-report", show_default=True)
def report(db, out):
    """Write the leaderboard as Markdown plus PNG plots."""
    from arena.report import write_report

    for path in write_report(db, out):
        click.echo(path)


@main.command()
@click.argument("key")
@DB_OPTION
@click.option("--out", default=None, help="Output file (default: adversarial-KEY.safetensors).")
def adversarial(key, db, out):
    """Save the adversarial batch a stored match (KEY or a unique prefix) was scored on, as
    safetensors (tensor 'adv', float32 N x 3 x H x W; metadata: key, images, match spec)."""
    import json

    from safetensors.numpy import save_file

    from arena.store import queries
    from arena.store.db import open_reader
    from arena.verify import stored_match

    engine = open_reader(db)
    row = stored_match(engine, key)
    adv = queries.adversarial(engine, row["id"])
    if adv is None:
        raise click.ClickException(f"match {row['key']} has no stored adversarial batch (status {row['status']})")
    images = [s["image"] for s in sorted(queries.scores_of(engine, row["id"]), key=lambda s: s["id"])]
    path = out or f"adversarial-{row['key']}.safetensors"
    save_file({"adv": adv}, path, metadata={"key": row["key"], "images": json.dumps(images),
                                            "spec": json.dumps(row["spec"])})
    click.echo(f"{path}: {adv.shape[0]} images {adv.shape[2]}x{adv.shape[3]}, match {row['key']}")


if __name__ == "__main__":  # pragma: no cover
    main()
