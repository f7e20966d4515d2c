"""No defense: the undefended restorer, the reference every defense is compared with."""

from arena.api import Defense
from arena.hookspecs import hookimpl


class NoDefense(Defense):
    """No defense (baseline)."""

    name = "none"


@hookimpl
def register_defenses(register):
    register(NoDefense)
