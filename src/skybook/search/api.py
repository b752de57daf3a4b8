"""HTTP route of the search context."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Response

from skybook.platform.deps import ContainerDep, SearchPrincipal
from skybook.platform.http import error_responses
from skybook.platform.schemas import PageInfo
from skybook.search.cache import CACHE_NAME, search_key, search_tags
from skybook.search.queries import search
from skybook.search.schemas import OfferPage, SearchQuery

router = APIRouter(prefix="/v1")


@router.get(
    "/offers",
    tags=["Search"],
    operation_id="searchOffers",
    summary="Search flights",
    response_model=OfferPage,
    responses=error_responses(403, 422),
)
async def search_offers(
    _principal: SearchPrincipal, query: Annotated[SearchQuery, Query()], container: ContainerDep
) -> Response:
    """Priced offers for a one-way or round trip, sorted by departure; hold one with its segments.

    Answers may come from the search cache: seat counts are those of the last inventory change
    the cache has been told about, so a hold can still find a flight full (the hold always checks).
    """

    async def compute() -> bytes:
        # A connection only on a miss: a cache hit touches no database.
        async with container.engine.connect() as conn:
            offers, total = await search(
                conn, query, now=container.clock.now(), max_passengers=container.max_passengers
            )
        page = OfferPage(items=offers, page_info=PageInfo(page=query.page, page_size=query.page_size, total=total))
        return orjson.dumps(page.model_dump(mode="json"))

    body = await container.search_cache.get_or_compute(CACHE_NAME, search_key(query), search_tags(query), compute)
    return Response(content=body, media_type="application/json")
