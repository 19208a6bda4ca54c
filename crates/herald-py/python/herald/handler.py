"""Seed 000's ``StepHandler`` contract and ``HandlerRegistry`` (manual registration and
package scanning)."""

from __future__ import annotations

import importlib
import logging
import pkgutil
from abc import ABC, abstractmethod
from typing import Any, Optional, Type

from .step import StepContext, StepHandlerResult

logger = logging.getLogger(__name__)


class StepHandler(ABC):
    """Base class of step handlers: set ``handler_name`` and implement ``call``."""

    handler_name: str = ""
    handler_version: str = "1.0.0"

    @abstractmethod
    def call(self, context: StepContext) -> StepHandlerResult:
        """Runs the step."""

    @property
    def name(self) -> str:
        """The handler name."""
        return self.handler_name or self.__class__.__name__

    @property
    def version(self) -> str:
        """The handler version."""
        return self.handler_version

    @property
    def capabilities(self) -> list[str]:
        """What it can do."""
        return ["process"]

    def config_schema(self) -> Optional[dict[str, Any]]:
        """A JSON schema for its configuration, if any."""
        return None


class HandlerRegistry:
    """Registry of step handler classes (seed 000)."""

    _instance: Optional["HandlerRegistry"] = None

    def __init__(self) -> None:
        self._handlers: dict[str, Type[StepHandler]] = {}

    @classmethod
    def instance(cls) -> "HandlerRegistry":
        """The process's registry."""
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    @classmethod
    def reset_instance(cls) -> None:
        """Forgets the process's registry (for tests)."""
        cls._instance = None

    def register(self, name: str, handler_class: Type[StepHandler]) -> None:
        """Registers ``handler_class`` under ``name`` (a second registration replaces it)."""
        if name in self._handlers:
            logger.warning("Overwriting existing handler: %s", name)
        self._handlers[name] = handler_class
        logger.info("Registered handler: %s -> %s", name, handler_class.__name__)

    def unregister(self, name: str) -> bool:
        """Removes ``name``; whether it was there."""
        return self._handlers.pop(name, None) is not None

    def resolve(self, name: str) -> Optional[StepHandler]:
        """A new instance of the handler registered as ``name``, or ``None``."""
        handler_class = self._handlers.get(name)
        if handler_class is None:
            logger.warning("Handler not found: %s", name)
            return None
        try:
            return handler_class()
        except Exception as e:  # a constructor that fails is reported, not raised
            logger.error("Failed to instantiate handler %s: %s", name, e)
            return None

    def is_registered(self, name: str) -> bool:
        """Whether ``name`` is registered."""
        return name in self._handlers

    def list_handlers(self) -> list[str]:
        """Every registered name."""
        return list(self._handlers.keys())

    def discover_handlers(
        self, package_name: str, base_class: Optional[Type[StepHandler]] = None
    ) -> int:
        """Registers every subclass of ``base_class`` (default ``StepHandler``) with a
        ``handler_name`` found in ``package_name`` and its subpackages; returns how many."""
        base = base_class or StepHandler
        try:
            package = importlib.import_module(package_name)
        except ImportError as e:
            logger.error("Failed to import package %s: %s", package_name, e)
            return 0
        discovered = 0
        for _, module_name, _ in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
            try:
                module = importlib.import_module(module_name)
            except Exception as e:  # one broken module does not stop the scan
                logger.warning("Failed to scan module %s: %s", module_name, e)
                continue
            for attr in dir(module):
                obj = getattr(module, attr)
                if (
                    isinstance(obj, type)
                    and issubclass(obj, base)
                    and obj is not base
                    and getattr(obj, "handler_name", "")
                    and obj.__module__ == module.__name__
                ):
                    self.register(obj.handler_name, obj)
                    discovered += 1
        logger.info("Discovered %d handlers in %s", discovered, package_name)
        return discovered
