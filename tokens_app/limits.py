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
