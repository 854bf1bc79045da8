"""The DUIX wire, client side: token signing (``auth``), payload parsing (``parse``) and the
async client (``client``). Everything a caller needs is re-exported here."""

from duixwatch.duix.auth import TokenCache, mint_token
from duixwatch.duix.client import ENDPOINTS, DuixClient, RequestObserver

__all__ = ["ENDPOINTS", "DuixClient", "RequestObserver", "TokenCache", "mint_token"]
