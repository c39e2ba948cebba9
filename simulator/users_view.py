"""A user object as one route shows it, with the strict switches applied."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simulator.site import Simulator

#: Routes whose user objects come from the search index, which (on Cloud) carries no
#: time zone; the rest read the user directly.
SEARCH_ROUTES = ("search_user", "group_members", "search")


def user_view(
    sim: Simulator, i: int, route: str = "search", *, full: bool = False
) -> dict[str, Any]:
    """Return user ``i`` as ``route`` serves it (``full``: with accountStatus and locale)."""
    user = sim.data.user_full(i) if full else sim.data.user_core(i)
    strict = sim.strict
    if not (strict.real_user_fields or strict.hide_time_zones or strict.cql_zone_name):
        return user
    user = dict(user)
    if strict.real_user_fields:
        # Guests are told by isExternalCollaborator and the externalCollaborator filter.
        user.pop("isGuest", None)
        if route in SEARCH_ROUTES:
            user.pop("timeZone", None)
    if strict.hide_time_zones:
        user.pop("timeZone", None)
    elif strict.cql_zone_name and i == 0 and "timeZone" in user:
        # The site admin (every credential's user) lives where CQL dates are read.
        user["timeZone"] = strict.cql_zone_name
    return user
