"""streamtap: an observability and recording proxy for LLM streaming APIs."""

from . import native

__version__ = "0.1.0"

# the worker's hot modules, compiled, where a source checkout has a current build (see streamtap.native)
native.activate()
