"""kofin: on-prem Korean financial assistant."""

__version__ = "0.1.0"
