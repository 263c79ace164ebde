"""Who the buyer of a request is: the identity step, and which ids the Gate accepts."""

from __future__ import annotations

from collections.abc import Callable

from .ledger import BUYER_ID

__all__ = ["Buyers", "HeaderGetter", "Identify", "header_identity"]

HeaderGetter = Callable[[str], "str | None"]
"""Looks up a request header by lower-case name."""
Identify = Callable[[HeaderGetter], "str | None"]
"""Returns the buyer id of a request, or ``None`` when there is none. One replaceable step."""
_REMEMBERED = 10_000


def header_identity(header: str) -> Identify:
    """The default identity step: the buyer id is the value of ``header`` (``zc-agent-id``)."""
    name = header.lower()

    def identify(get_header: HeaderGetter) -> str | None:
        return get_header(name)

    return identify


class Buyers(set[object]):
    """The ids found valid so far (:data:`~zc_middleware.ledger.BUYER_ID`), remembered up to a bound:
    ``buyer in buyers or buyers.valid(buyer)`` costs a returning buyer one set lookup."""

    def valid(self, buyer: object) -> bool:
        """Whether ``buyer`` is a valid id; remembered if so."""
        if buyer in self:
            return True
        if not isinstance(buyer, str) or not BUYER_ID.fullmatch(buyer):
            return False
        if len(self) >= _REMEMBERED:
            self.clear()
        self.add(buyer)
        return True
