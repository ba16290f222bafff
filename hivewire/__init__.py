"""hivewire: what a hive and its clients agree on, and nothing else.

The keeper (and any other client) imports this package, never ``hive``: the
stream protocol, the names the API accepts, the token file's place and form.
It imports only the standard library, so importing it costs a client nothing.
"""

__version__ = "0.1.0"
