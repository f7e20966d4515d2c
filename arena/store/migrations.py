"""Named schema migrations, recorded in ``schema_migrations``.

Each migration is a function ``mNNN_description(conn)``. A blank database gets every migration
in order; an existing one gets only those it has not recorded. To change the schema, append a
migration (ALTER/CREATE) and update ``models.py`` to match; never edit an applied migration.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import Connection, inspect, select, text

from arena.errors import ArenaError
from arena.store import models

INITIAL_TABLES = [
    "tournaments", "entrants", "matches", "scores", "samples", "tournament_matches", "flags",
]


def m001_initial(conn: Connection) -> None:
    tables = [models.metadata.tables[name] for name in INITIAL_TABLES]
    models.metadata.create_all(conn, tables=tables)


def m002_match_placement(conn: Connection) -> None:
    """Where and when each match ran: the Ray node, and wall-clock start and end."""
    # A blank database got these from m001's create_all (models.py is the current schema);
    # a database made before them gets them here.
    have = {c["name"] for c in inspect(conn).get_columns("matches")}
    for name, sql_type in (("node", "VARCHAR(100)"), ("started_at", "FLOAT"), ("finished_at", "FLOAT")):
        if name not in have:
            conn.execute(text(f"ALTER TABLE matches ADD COLUMN {name} {sql_type}"))


M003_COLUMNS = (("blame", "VARCHAR(20)"), ("verified", "BOOLEAN"), ("warm_gap_db", "FLOAT"),
                ("eot_used", "INTEGER"), ("evaluations", "INTEGER"), ("evaluation_limit", "INTEGER"),
                ("probes", "JSON"), ("minimum_norm", "BOOLEAN"), ("suite", "VARCHAR(40)"))


def m003_enforcement(conn: Connection) -> None:
    """The arena's rule enforcement: blame, fresh re-scoring, evaluation counts, probes, the
    traits the flags read, the stored adversarial batches, and flags kept per tournament."""
    have = {c["name"] for c in inspect(conn).get_columns("matches")}
    for name, sql_type in M003_COLUMNS:
        if name not in have:
            conn.execute(text(f"ALTER TABLE matches ADD COLUMN {name} {sql_type}"))
    have = {c["name"] for c in inspect(conn).get_columns("scores")}
    for name in ("adv_psnr_mean", "adv_psnr_worst", "adv_ssim_worst"):  # N-evaluation of random systems
        if name not in have:
            conn.execute(text(f"ALTER TABLE scores ADD COLUMN {name} FLOAT"))
    models.adversarial.create(conn, checkfirst=True)
    if "tournament_id" not in {c["name"] for c in inspect(conn).get_columns("flags")}:
        # its rows were derived over every tournament at once: the next `arena run` of each
        # tournament stores its own again, and `arena verify` its findings
        models.flags.drop(conn)
        models.flags.create(conn)


M004_COLUMNS = (("frozen", "BOOLEAN"), ("escalated", "TEXT"), ("lower_bound", "TEXT"),
                ("moved_db", "FLOAT"), ("converged", "BOOLEAN"), ("protocol", "JSON"))


def m004_standard_protocol(conn: Connection) -> None:
    """The standard suite's protocol: fixed-randomness matches, escalation to BPDA, attacks
    through approximate gradients (lower bounds), the convergence of every iterative attack,
    and the EOT rule's measurement."""
    have = {c["name"] for c in inspect(conn).get_columns("matches")}
    for name, sql_type in M004_COLUMNS:
        if name not in have:
            conn.execute(text(f"ALTER TABLE matches ADD COLUMN {name} {sql_type}"))


def m006_planned_total(conn: Connection) -> None:
    """How many matches a tournament's last run planned, so that a dashboard can show progress."""
    if "planned" not in {c["name"] for c in inspect(conn).get_columns("tournaments")}:
        conn.execute(text("ALTER TABLE tournaments ADD COLUMN planned INTEGER"))


def m008_claims(conn: Connection) -> None:
    """Match claims with a lease, so that drivers sharing one database split the work."""
    models.claims.create(conn, checkfirst=True)


def m012_attack_cost(conn: Connection) -> None:
    """The attack's time per megapixel, beside the defense's, so that costs compare across sizes."""
    if "attack_ms_per_mp" not in {c["name"] for c in inspect(conn).get_columns("matches")}:
        conn.execute(text("ALTER TABLE matches ADD COLUMN attack_ms_per_mp FLOAT"))


MIGRATIONS = [m001_initial, m002_match_placement, m003_enforcement, m004_standard_protocol, m006_planned_total,
              m008_claims, m012_attack_cost]
KNOWN = [m.__name__ for m in MIGRATIONS]


class SchemaError(ArenaError, RuntimeError):
    """A database whose schema this version of the arena does not know."""


def applied(conn: Connection) -> list[str]:
    if not inspect(conn).has_table("schema_migrations"):
        return []
    rows = conn.execute(select(models.schema_migrations.c.name)).scalars().all()
    return sorted(rows)


#: PostgreSQL advisory lock key held while migrating ("udca" in ASCII)
SCHEMA_LOCK = 0x75646361


def lock_schema(conn: Connection) -> None:
    """Take the database's write lock for this transaction, so that drivers starting together
    migrate one after the other (the second finds the tables made): PostgreSQL's advisory lock,
    SQLite's ``BEGIN IMMEDIATE``."""
    backend = conn.dialect.name
    if backend == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
    elif backend == "sqlite" and not conn.connection.driver_connection.in_transaction:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def migrate(conn: Connection) -> list[str]:
    """Apply pending migrations under the schema lock; return the names applied now."""
    lock_schema(conn)
    models.schema_migrations.create(conn, checkfirst=True)
    done = set(applied(conn))
    unknown = done - set(KNOWN)
    if unknown:
        raise SchemaError(
            f"database has migrations this arena does not know ({', '.join(sorted(unknown))}); "
            "upgrade udc-arena"
        )
    now = []
    for migration in MIGRATIONS:
        if migration.__name__ in done:
            continue
        migration(conn)
        conn.execute(
            models.schema_migrations.insert().values(
                name=migration.__name__, applied_at=datetime.now(timezone.utc)
            )
        )
        now.append(migration.__name__)
    return now


def check_current(conn: Connection) -> None:
    """Raise SchemaError unless the database's schema is exactly the one this code knows."""
    done = applied(conn)
    if not done:
        raise SchemaError("not a udc-arena database (no schema_migrations table)")
    if done != sorted(KNOWN):
        raise SchemaError(
            f"database schema {done} differs from this arena's {sorted(KNOWN)}; "
            "run `arena run` with this version once to migrate, or upgrade udc-arena"
        )
