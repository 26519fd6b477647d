"""Whether a hosted page's form post came from the site's own pages (the link's token protects it too)."""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import Request

from api.app_state import settings_of


def same_site(request: Request) -> bool:
    """Whether the browser says the form came from this site's own pages. Sec-Fetch-Site says it when
    sent; Origin is no help then, as the pages' no-referrer policy makes browsers send `Origin: null` on
    their own forms. Clients that send neither (curl, older browsers) are let through: the token in the
    path is what protects the form."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return True
    own = {f"{request.url.scheme}://{request.url.netloc}"}
    base = urlsplit(settings_of(request).base_url)
    own.add(f"{base.scheme}://{base.netloc}")
    return origin in own
