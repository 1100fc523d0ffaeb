"""natroute: NAT-traversal routing for UDP peer-to-peer overlays.

Subpackages: ``routing`` (the sans-I/O routing core), ``beacon``, ``registry``
and ``sidecar`` (services built on it).
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
