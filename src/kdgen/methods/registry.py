"""The method registry (kept apart from methods/__init__ so each method file can import it)."""

from ..registry import Registry

METHODS: Registry[type] = Registry("method")
