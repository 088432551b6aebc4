#!/usr/bin/env python3
"""Verify a tokens_app JWT in another service, without Django: PyJWT and the JWKS URL.

    pip install 'pyjwt[crypto]'
    python verify_jwt.py --jwks-url https://api.example.com/.well-known/jwks.json \\
        --issuer tokens_app-example --audience api --scope notes:read "$JWT"

Prints the verified claims as JSON and exits 0, or prints why on stderr and exits 1.
The checks are the ones tokens_app makes: the algorithm is pinned here (never taken
from the token), the key is chosen by ``kid`` from the JWKS document, and ``typ``,
``iss``, ``aud``, ``exp``/``nbf`` (with a small leeway) and the required claims are
checked. What this cannot see is revocation: a JWT minted from an API token that was
revoked since stays valid here until it expires (minutes), while tokens_app itself
refuses it at once. Use ``POST /api/auth/introspect/`` where that matters.
"""

import argparse
import json
import sys

import jwt

ALGORITHMS = ["RS256", "ES256", "EdDSA"]  # asymmetric only: HS256 secrets are never shared
REQUIRED = ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "scope", "client_id"]


def verify(token: str, jwks_url: str, issuer: str, audience: str, leeway: int) -> dict:
    header = jwt.get_unverified_header(token)
    if str(header.get("typ", "")).lower() not in {"at+jwt", "application/at+jwt"}:
        raise jwt.InvalidTokenError("not an access token (typ)")
    if header.get("alg") not in ALGORITHMS:
        raise jwt.InvalidTokenError(f"algorithm {header.get('alg')!r} not accepted")
    signing_key = jwt.PyJWKClient(jwks_url, cache_keys=True).get_signing_key_from_jwt(token)
    return jwt.decode(
        token,
        signing_key.key,
        algorithms=[header["alg"]],
        audience=audience,
        issuer=issuer,
        leeway=leeway,
        options={"require": REQUIRED},
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("token")
    parser.add_argument("--jwks-url", required=True)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--audience", required=True)
    parser.add_argument("--scope", action="append", default=[], help="a scope the JWT must hold")
    parser.add_argument("--leeway", type=int, default=10)
    args = parser.parse_args(argv)
    try:
        claims = verify(args.token, args.jwks_url, args.issuer, args.audience, args.leeway)
    except jwt.PyJWTError as error:
        print(f"invalid: {error}", file=sys.stderr)
        return 1
    missing = set(args.scope) - set(str(claims["scope"]).split())
    if missing:
        print(f"invalid: missing scope {' '.join(sorted(missing))}", file=sys.stderr)
        return 1
    print(json.dumps(claims, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
