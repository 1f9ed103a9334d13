"""The tests' AWS estate is the sandbox's: one builder for the demo and the tests."""

from vigil.sandbox.moto import REGION, TAG, Estate, build, session
from vigil.sandbox.moto import MotoServer as Moto

__all__ = ["REGION", "TAG", "Estate", "Moto", "build", "session"]
