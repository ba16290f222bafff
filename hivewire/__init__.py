"""hivewire: what a hive and its clients agree on, and nothing else.

The keeper (and any other client) imports this package, never ``hive``: the
stream protocol, the names the API accepts, the token file's place and form.
It imports only the standard library, so importing it costs a client nothing.
"""

__version__ = "0.1.0"

#: Version of the HTTP/websocket API, reported as ``api`` by ``/v1/health``.
#: A keeper talks only to a hive with the same number; bump it on any
#: incompatible change (``/v1/health`` itself keeps its shape forever).
API_VERSION = 1
