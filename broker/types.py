"""The field types every domain's bodies share: clean text, ticket references, closed bodies.

They were filed in the sessions' schemas, so auth, devices, tickets and evidence imported the
sessions domain for a string rule; here they are a foundation that imports nothing of ours.

Bodies are strict and closed (``extra="forbid"``): an unknown field or a string where a
number belongs is a 422, never silently coerced or ignored.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# Bidirectional overrides make text read differently from what it is ("trojan source"):
# refused with the control characters, so a consent page cannot be made to lie.
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def clean_text(value: str) -> str:
    """Refuse control characters (newlines included) and bidi overrides; unicode is fine."""
    match = _FORBIDDEN.search(value)
    if match:
        raise ValueError(f"must not contain control characters (found U+{ord(match[0]):04X})")
    return value


def non_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value.strip()


CleanText = Annotated[str, AfterValidator(clean_text)]
TicketSystem = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,49}$")]
TicketId = Annotated[
    str, Field(min_length=1, max_length=100), AfterValidator(clean_text), AfterValidator(non_blank)
]


class Body(BaseModel):
    # Numbers and booleans are strict per field (a string "5" is refused); the model itself
    # is not, because FastAPI validates parsed JSON in Python mode, where strict mode would
    # refuse enum values given as strings.
    model_config = ConfigDict(extra="forbid")
