"""udc-arena's built-in plugins, installed as the package ``arena_plugins``.

Each module registers through the ``arena`` entry-point group exactly as a third-party plugin
would; the core never imports this package.
"""
