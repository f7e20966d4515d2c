"""The base of the arena's user-facing errors, in a module of its own so that the store and the
dashboard (which import neither torch nor Ray) can derive from it. Import it from ``arena.api``."""


class ArenaError(Exception):
    """A user-facing error: the CLI prints its one-line message, no traceback."""
