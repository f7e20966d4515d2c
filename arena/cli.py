"""`arena …` commands."""

from __future__ import annotations

import json
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
    """Turns the arena's own user-facing errors into one clean line instead of a traceback."""

    def invoke(self, ctx):
        from arena.api import ConfigError
        from arena.plugins import PluginError
        from arena.run.executors import ExecutorError
        from arena.store.db import DatabaseError
        from arena.store.migrations import SchemaError
        from arena.weights import WeightsError

        known = (ConfigError, PluginError, ExecutorError, DatabaseError, SchemaError, WeightsError)
        try:
            data_error = __import__("arena.data", fromlist=["DataError"]).DataError
            known = known + (data_error,)
        except (ImportError, AttributeError):  # pragma: no cover
            pass
        try:
            return super().invoke(ctx)
        except known as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=ArenaGroup)
@click.version_option(package_name="udc-arena")
def main():
    """udc-arena: UDC restorers, adversarial attacks and defenses in one tournament."""


LEADERBOARD_COLUMNS = ["rank", "restorer", "defense", "clean_psnr", "clean_ssim", "robust_psnr",
                       "robust_ssim", "drop_psnr", "worst_attack", "n_images", "flags"]


def print_leaderboard(db: str, tournament_id: int | None = None, threat: str | None = None) -> None:
    from arena.store import queries
    from arena.store.db import open_reader

    engine = open_reader(db)
    rows = queries.leaderboard(engine, tournament_id, threat)
    if not rows:
        click.echo("no scored matches yet")
        return
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r["threat"], r["norm"], r["eps"]), []).append(r)
    for r in rows:  # the terminal gets flag names; reasons are on the dashboard
        r["flags"] = ", ".join(sorted({f.split(":")[0] for f in r["flags"].split("; ") if f}))
    for (threat_, norm, eps), members in groups.items():
        click.echo(f"\n== {threat_} | {norm} eps={eps:.4g} ({eps * 255:.3g}/255) ==")
        click.echo(queries.format_table(members, LEADERBOARD_COLUMNS))


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
        click.echo(summarise_plan(plan(t, registry)))
        return
    report = run_tournament(t, db, executor=executor, address=address, rerun_failed=rerun_failed,
                            device=device, progress=not quiet, registry=registry)
    counts = ", ".join(f"{n} {k}" for k, n in sorted(report.counts.items())) or "nothing new"
    click.echo(f"tournament {t.name!r}: {report.planned} matches planned; this run: {counts}; "
               f"already stored: {report.resumed}")
    print_leaderboard(db, report.tournament_id)
    click.echo(f"\nresults database: {db}")
    click.echo(f"dashboard:        arena dashboard --db {db}")


@main.command()
@DB_OPTION
@click.option("--threat", type=click.Choice(["oblivious", "adaptive"]), default=None)
@click.option("--tournament", type=int, default=None, help="Tournament id (default: the latest).")
@click.option("--all", "all_matches", is_flag=True, help="Rank every stored match, whichever tournament.")
def leaderboard(db, threat, tournament, all_matches):
    """Print the ranking: clean vs robust PSNR/SSIM per restorer and defense."""
    from arena.store import queries
    from arena.store.db import open_reader

    if tournament is None and not all_matches:
        tournament = queries.latest_tournament_id(open_reader(db))
    print_leaderboard(db, tournament, threat)


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable listing.")
@click.pass_context
def plugins(ctx, as_json):
    """List every registered restorer, attack and defense."""
    if ctx.invoked_subcommand is not None:
        return
    from arena.plugins import describe, load_registry

    infos = [describe(e) for e in load_registry().all()]
    if as_json:
        click.echo(json.dumps(infos, indent=2, default=str))
        return
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
    from arena.store.db import open_reader

    open_reader(db)  # refuse a missing or foreign database before starting a server
    app = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
    env = dict(os.environ, ARENA_DB=db)
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", "127.0.0.1",
           "--server.port", str(port), "--server.headless", "true",
           "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal"]
    click.echo(f"dashboard on http://127.0.0.1:{port} (database {db}, read-only)")
    os.execvpe(cmd[0], cmd, env)


@plugins.command("check")
@click.argument("name")
def plugins_check(name):
    """Run the conformance checks on an installed component NAME; list what fails."""
    from arena import testing
    from arena.plugins import load_registry

    registry = load_registry()
    found = [e for role in ("restorer", "attack", "defense") for e in [registry.entries[role].get(name)] if e]
    if not found:
        raise click.ClickException(f"no installed restorer, attack or defense is called '{name}'")
    failed = False
    for entry in found:
        check = {"restorer": testing.check_restorer, "attack": testing.check_attack,
                 "defense": testing.check_defense}[entry.role]
        problems = check(entry.cls)
        source = f"{entry.package} {entry.version}".strip()
        if problems:
            failed = True
            click.echo(f"{entry.role} '{name}' ({source}) fails {len(problems)} check(s):")
            for p in problems:
                click.echo(f"  - {p}")
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
               f"{r['max_abs_diff_db']:.2e} dB (tolerance {r['tolerance_db']:g})")
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

    problems = check_dataset(fmt, root)
    for p in problems:
        click.echo(f"- {p}")
    if problems:
        raise click.ClickException(f"{len(problems)} problem(s) in {root}")
    click.echo(f"{root}: a valid {fmt} dataset")


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def train(ctx):
    """Train a restorer: arena train RESTORER [--steps N] [--out DIR] (see --help there)."""
    from arena.train import main as train_main

    click.echo(train_main(ctx.args))


@main.command()
@click.argument("names", nargs=-1)
@click.option("--device", default=None, help="cpu, cuda, … (default: cuda when available)")
def zoo(names, device):
    """Score every restorer with shipped weights on the test split; print the README table."""
    from arena.train import zoo_table

    click.echo(zoo_table(list(names) or None, device=device))


@main.command("train-purifier")
@click.option("--steps", default=850, show_default=True, help="the shipped purifier's count")
@click.option("--out", default="purifier.safetensors", show_default=True)
@click.option("--size", default=32, show_default=True)
@click.option("--seed", default=0, show_default=True)
def train_purifier(steps, out, size, seed):
    """Train the diffusion purifier on the embedded benchmark's UDC inputs."""
    from arena.diffusion import train_purifier as train_fn

    click.echo(train_fn(steps, out, seed=seed, size=size))


@main.command()
@DB_OPTION
@click.option("--out", default="arena-report", show_default=True)
def report(db, out):
    """Write the leaderboard as Markdown plus PNG plots."""
    from arena.report import write_report

    for path in write_report(db, out):
        click.echo(path)


if __name__ == "__main__":  # pragma: no cover
    main()
