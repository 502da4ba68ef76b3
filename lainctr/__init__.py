"""lainctr: the library behind the LAIN long-sequence CTR model zoo."""
from .version import __version__

__all__ = ["__version__"]
