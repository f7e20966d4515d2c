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
@click.option("--tournament", type=int, default=None, help="Tournament id (default: every stored match).")
def leaderboard(db, threat, tournament):
    """Print the ranking: clean vs robust PSNR/SSIM per restorer and defense."""
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
           "--browser.gatherUsageStats", "false"]
    click.echo(f"dashboard on http://127.0.0.1:{port} (database {db}, read-only)")
    os.execvpe(cmd[0], cmd, env)


if __name__ == "__main__":  # pragma: no cover
    main()
