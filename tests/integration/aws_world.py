"""The tests' AWS estate is the sandbox's: one builder for the demo and the tests."""

from vigil_sandbox.moto import REGION, TAG, Estate, build, session
from vigil_sandbox.moto import MotoServer as Moto

__all__ = ["REGION", "TAG", "Estate", "Moto", "build", "session"]
