"""Field limits, one source for each: the model fields, validation, serializers and forms read them.

A primitive: it imports nothing of tokens_app, so every layer may use it.
"""

#: A token's name (``APIToken.name``).
NAME_LENGTH = 100
#: A token's description.
DESCRIPTION_LENGTH = 1000
#: A revocation's reason, as stored and as asked for.
REASON_LENGTH = 200
#: A rate limit such as ``1000/h``, as stored.
RATE_LENGTH = 32
#: How many networks one token may list, and the text of one entry.
ALLOWED_IPS = 100
NETWORK_LENGTH = 64
#: How many scope names one request may send.
SCOPES_PER_REQUEST = 50
#: How many generations of tokens a token may create below itself: each generation adds
#: one rate-limit counter to every request of its descendants (and one entry to a JWT's).
MAX_LINEAGE_DEPTH = 5

#: A rate budget a request counts against: (key id whose counter it is, rate).
Budget = tuple[str, str]
