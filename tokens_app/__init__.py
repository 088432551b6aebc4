"""Scoped, hashed, expiring, revocable API tokens for Django REST Framework."""

__version__ = "0.1.0"
