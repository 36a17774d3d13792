"""What the catalogue's three kinds (item banks, modules, batteries) share.

Here, below all three, so that none of them imports another just for these.
"""

from __future__ import annotations

import enum

# The key of an item bank, a module or a battery (with a version, it names one).
KEY = r"^[a-z][a-z0-9_]{0,63}$"


# A draft can still change; a published version never does. (A comment, not a docstring:
# that would become the enum's description in the OpenAPI.)
class PublicationStatus(enum.StrEnum):
    draft = "draft"
    published = "published"
