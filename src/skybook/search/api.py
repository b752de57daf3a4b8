"""HTTP route of the search context."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from skybook.platform.deps import ContainerDep, SearchPrincipal
from skybook.platform.http import error_responses
from skybook.platform.schemas import PageInfo
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

    Seat counts may come from the search cache, as of the last inventory change it has been told
    about; a hold always checks the inventory itself.
    """
    sources = container.search_sources
    offers, total = await search(
        query,
        zones=sources.zones,
        legs=sources.leg,
        now=container.clock.now(),
        max_passengers=container.max_passengers,
    )
    page = OfferPage(items=offers, page_info=PageInfo(page=query.page, page_size=query.page_size, total=total))
    # Serialised here, once, by pydantic-core: returning the model would make FastAPI validate it
    # again against response_model and encode it through Python dicts - most of a cached search's CPU.
    return Response(page.model_dump_json(), media_type="application/json")
