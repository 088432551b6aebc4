"""Primitives: the token string, hashing, clock, durations, scopes, field rules, client address.

Nothing here imports models, services or an adapter; every other layer may use them.
"""
