"""Everything duixwatch sends over HTTP as a client: the DUIX platform and policy webhooks.

* :mod:`~duixwatch.duix.auth` — request tokens (HS256 JWTs signed with the appKey);
* :mod:`~duixwatch.duix.wire` — the HTTP exchange (aiohttp on asyncio, or httpx);
* :mod:`~duixwatch.duix.parse` — the envelope, the error table, tolerant payload parsing;
* :mod:`~duixwatch.duix.client` — :class:`DuixClient`, the typed calls of every endpoint;
* :mod:`~duixwatch.duix.webhook` — policy notifications' POSTs.

HTTP client libraries are imported here and nowhere else in the product (README →
Development); a caller that injects a transport (the tests' in-process simulator) names its
type as :data:`Transport`.
"""

import httpx

from duixwatch.duix.auth import TokenCache, mint_token
from duixwatch.duix.client import ENDPOINTS, DuixClient, RequestObserver

#: An httpx transport a caller may inject in place of the network (``httpx.ASGITransport``).
Transport = httpx.AsyncBaseTransport

__all__ = ["ENDPOINTS", "DuixClient", "RequestObserver", "TokenCache", "Transport", "mint_token"]
