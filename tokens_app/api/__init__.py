"""The self-service token API: list, create, inspect, rename, rotate and revoke your own tokens."""
