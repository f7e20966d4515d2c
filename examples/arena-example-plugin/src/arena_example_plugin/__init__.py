"""An example plugin for udc-arena: a score-based attack and a random input defense.

The arena finds the two modules through the entry points in pyproject.toml; importing this
package registers nothing by itself.
"""

__version__ = "0.1.0"
