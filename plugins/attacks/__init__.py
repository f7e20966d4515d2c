"""Built-in attacks, one module per attack, each registered through an ``arena`` entry point."""
