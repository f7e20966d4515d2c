"""Results storage: SQLAlchemy models, migrations, engines and leaderboard queries.

Importing this package (and ``arena.store.queries``) loads neither torch nor Ray, so the
dashboard stays light.
"""
