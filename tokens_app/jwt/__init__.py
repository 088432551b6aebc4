"""JWT access tokens: signing keys, encoding and verification, and the deny list.

Below ``services``: what goes into a JWT is ``services.jwts``'s to decide.
"""
