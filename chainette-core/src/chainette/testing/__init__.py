"""Test helpers for chainette and for backend authors (install `chainette-core[testing]`)."""

from chainette.testing.server import FakeServer, Fault, FaultPlan

__all__ = ["FakeServer", "Fault", "FaultPlan"]
