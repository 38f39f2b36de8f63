"""The bridge child process used by tests: the load tools' harness."""

from loadtest.harness import BUSBRIDGE, BridgeProcess, free_port

__all__ = ["BUSBRIDGE", "BridgeProcess", "free_port"]
