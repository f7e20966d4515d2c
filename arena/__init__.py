"""udc-arena: a tournament of under-display-camera restorers, adversarial attacks and defenses."""

__version__ = "0.1.0"
