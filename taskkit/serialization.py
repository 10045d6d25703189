"""A re-export of ``taskkit.core.serialization``: this path stays for users
(the docs name taskkit.serialization.MAX_DEPTH).
"""

from .core.serialization import (
    MAX_DEPTH,
    MAX_INT,
    MIN_INT,
    TAG,
    argument_names,
    cap_result,
    decode,
    decode_call,
    encode,
    encode_call,
    encode_result,
    payload_size,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_INT",
    "MIN_INT",
    "TAG",
    "argument_names",
    "cap_result",
    "decode",
    "decode_call",
    "encode",
    "encode_call",
    "encode_result",
    "payload_size",
]
