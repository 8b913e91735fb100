"""simlab-webpool: a web service in front of a database connection pool, as a simlab plug-in.

The model is ``webpool.model:MODEL``, registered under the name ``web_pool`` through the entry
point group ``simlab.models`` (see pyproject.toml).
"""

from webpool.model import MODEL

__all__ = ["MODEL"]
