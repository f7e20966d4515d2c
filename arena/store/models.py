"""The current schema, as SQLAlchemy Core tables."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    LargeBinary,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

tournaments = Table(
    "tournaments", metadata,
    Column("id", Integer, primary_key=True),
    Column("config_hash", String(64), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("config", JSON, nullable=False),
    Column("command", Text),
    Column("code_version", String(100)),
    Column("plugin_versions", JSON),
    Column("seed", Integer),
    Column("host", String(200)),
    Column("data_version", String(100)),
    Column("data_hash", String(64)),
    Column("created_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True)),
    Column("planned", Integer),  # m006: matches the last run planned (the Runs page's total and ETA)
)

entrants = Table(
    "entrants", metadata,
    Column("id", Integer, primary_key=True),
    Column("entrant_key", String(64), nullable=False, unique=True),
    Column("role", String(20), nullable=False),
    Column("name", String(200), nullable=False),
    Column("kind", String(100)),
    Column("params", JSON),
    Column("package", String(200)),
    Column("version", String(100)),
    Column("weights_hash", String(64)),
)

matches = Table(
    "matches", metadata,
    Column("id", Integer, primary_key=True),
    Column("key", String(64), nullable=False, unique=True),
    Column("tournament_id", ForeignKey("tournaments.id"), nullable=False),
    Column("restorer", String(200), nullable=False),
    Column("defense", String(400), nullable=False),
    Column("attack", String(200), nullable=False),
    Column("attack_kind", String(40)),
    Column("threat", String(20), nullable=False),
    Column("norm", String(8), nullable=False),
    Column("eps", Float, nullable=False),
    Column("steps", Integer),
    Column("queries_limit", Integer),
    Column("eot", Integer),
    Column("seed", Integer),
    Column("spec", JSON, nullable=False),
    Column("status", String(20), nullable=False),  # done | failed | disqualified | skipped
    Column("reason", Text),
    Column("error", Text),
    Column("device", String(100)),
    Column("code_version", String(100)),
    Column("versions", JSON),
    Column("created_at", DateTime(timezone=True)),
    Column("time_clean_s", Float),
    Column("time_attack_s", Float),
    Column("time_total_s", Float),
    Column("defense_ms_per_mp", Float),
    Column("peak_mem_mb", Float),
    Column("gradient_calls", Integer),
    Column("trace", JSON),
    Column("start_grad", JSON),
    Column("attempts", Integer),
    Column("node", String(100)),  # m002
    Column("started_at", Float),  # m002, epoch seconds
    Column("finished_at", Float),  # m002
    # m003: the arena's own rule enforcement (EVALUATION.md, "Entrants are adversaries")
    Column("blame", String(20)),  # who a failed/disqualified match counts against: attack | system | infra
    Column("verified", Boolean),  # scores recomputed by a fresh system in a fresh process
    Column("warm_gap_db", Float),  # largest |warm - fresh| adversarial PSNR over the images
    Column("eot_used", Integer),  # EOT draws the attack's target actually used
    Column("evaluations", Integer),  # images through the defended system during the attack
    Column("evaluation_limit", Integer),  # the bound on them (README: trust)
    Column("probes", JSON),  # the worker's probes of the system's declarations
    Column("minimum_norm", Boolean),  # the attack is minimum-norm (arena/flags.py reads it)
    Column("suite", String(40)),  # the attack suite (name-version, arena/suite.py) or NULL
    # m004: the standard suite's protocol (arena/suite.py, README "The standard evaluation")
    Column("frozen", Boolean),  # the random links' randomness frozen to the seed (fixed-randomness score)
    Column("escalated", Text),  # why the suite attacked through BPDA instead of the declared rules
    Column("lower_bound", Text),  # the links an adaptive white-box attack only approximated (bpda, surrogate)
    Column("moved_db", Float),  # the best loss's rise over the last quarter of the attack, in dB
    Column("converged", Boolean),  # moved_db <= arena.match.NOT_CONVERGED_DB (NULL: not iterative)
    Column("protocol", JSON),  # the EOT rule's measurement (count, cosine, reference draws)
    Column("attack_ms_per_mp", Float),  # m012: the attack's own time per megapixel (NULL: reused)
    Index("ix_matches_group", "threat", "norm", "eps", "restorer", "defense"),
)

scores = Table(
    "scores", metadata,
    Column("id", Integer, primary_key=True),
    Column("match_id", ForeignKey("matches.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("image", String(200), nullable=False),
    Column("clean_psnr", Float, nullable=False),
    Column("clean_ssim", Float, nullable=False),
    Column("adv_psnr", Float, nullable=False),
    Column("adv_ssim", Float, nullable=False),
    # m003: a random system's batch under N draws (arena.match.N_EVALUATIONS); NULL otherwise
    Column("adv_psnr_mean", Float),
    Column("adv_psnr_worst", Float),
    Column("adv_ssim_worst", Float),
    Column("linf", Float),
    Column("l2", Float),
    Column("queries", Integer),
)

samples = Table(
    "samples", metadata,
    Column("id", Integer, primary_key=True),
    Column("match_id", ForeignKey("matches.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("image", String(200), nullable=False),
    Column("kind", String(40), nullable=False),  # lq | adv | delta | restored_clean | restored_adv | hq
    Column("path", Text, nullable=False),
)

adversarial = Table(  # m003: every finished match's adversarial batch, losslessly
    "adversarial", metadata,
    Column("match_id", ForeignKey("matches.id", ondelete="CASCADE"), primary_key=True),
    Column("shape", JSON, nullable=False),  # (N, 3, H, W), float32, C order
    Column("sha256", String(64), nullable=False),  # of the raw float32 bytes
    Column("data", LargeBinary, nullable=False),  # zlib-compressed float32 bytes
)

tournament_matches = Table(
    "tournament_matches", metadata,
    Column("tournament_id", ForeignKey("tournaments.id"), primary_key=True),
    Column("match_id", ForeignKey("matches.id", ondelete="CASCADE"), primary_key=True),
)

flags = Table(
    "flags", metadata,
    Column("id", Integer, primary_key=True),
    Column("tournament_id", ForeignKey("tournaments.id")),  # m003; none: shown with every tournament
    Column("threat", String(20), nullable=False),
    Column("norm", String(8)),
    Column("eps", Float),
    Column("restorer", String(200), nullable=False),
    Column("defense", String(400), nullable=False),
    Column("attack", String(200)),
    Column("flag", String(60), nullable=False),
    Column("reason", Text, nullable=False),
    UniqueConstraint("tournament_id", "threat", "norm", "eps", "restorer", "defense", "attack", "flag"),
)

claims = Table(  # m008: which driver computes a match now, so that concurrent drivers split the work
    "claims", metadata,
    Column("key", String(64), primary_key=True),  # the match key
    Column("owner", String(200), nullable=False),  # "host:pid:nonce" of the claiming driver
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

schema_migrations = Table(
    "schema_migrations", metadata,
    Column("name", String(100), primary_key=True),
    Column("applied_at", DateTime(timezone=True)),
)
