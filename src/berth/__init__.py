"""Berth: a container runtime stack in Python."""

__version__ = "0.1.0"
OCI_SPEC_VERSION = "1.1.0"
