"""Confluence v1 REST routes (served under both the gateway prefix and the site root)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from simulator.data import iso_ms
from simulator.search import content_search
from simulator.users_view import user_view
from simulator.web import (
    HTTPError,
    Request,
    Response,
    confluence_error,
    dumps,
    forward_params,
    json_response,
    links,
    rel_link,
)

if TYPE_CHECKING:
    from simulator.site import Simulator

SEARCH_USER_CAP = 10_000
USER_LIMIT = 200
AUDIT_LIMIT = 1000
#: v2 users-bulk takes at most this many account ids [UNV: the v2 reference gives no maximum].
V2_BULK_MAX = 100

Handler = Callable[["Simulator", Request], Response]


@dataclass(frozen=True)
class Route:
    """A Confluence route: its name in stats, handler and what it requires."""

    name: str
    pattern: re.Pattern[str]
    handler: Handler
    scopes: tuple[frozenset[str], ...]  # any one set suffices
    admin: bool = False
    licence: bool = False  # private licence endpoint: site-root classic Basic auth only
    methods: tuple[str, ...] = ("GET",)


def _scopes(*alternatives: str) -> tuple[frozenset[str], ...]:
    return tuple(frozenset(a.split()) for a in alternatives)


# ---- settings ---------------------------------------------------------------------------


def system_info(sim: Simulator, req: Request) -> Response:
    """GET settings/systemInfo."""
    body = {
        "cloudId": sim.creds.cloud_id,
        "commitHash": "4f1c2b9",
        "baseUrl": sim.site_url + "/wiki",
        "edition": "standard",
        "siteTitle": "Simulated Wiki ✨",
        "defaultLocale": "en_US",
        "defaultTimeZone": sim.strict.cql_zone_name or "Europe/Stockholm",
        "microsPerimeter": "commercial",
    }
    if sim.strict.hide_time_zones:
        del body["defaultTimeZone"]
    return json_response(200, body)


# ---- users ------------------------------------------------------------------------------

_TYPE_USER = re.compile(r'^\s*type\s*=\s*"?user"?\s*$', re.IGNORECASE)
_USER_EQ = re.compile(r'^\s*user(?:\.accountid)?\s*=\s*"([^"]+)"\s*$', re.IGNORECASE)
_USER_IN = re.compile(r"^\s*user\s+in\s*\(([^)]*)\)\s*$", re.IGNORECASE)
_FULLNAME = re.compile(r'^\s*user\.fullname\s*~\s*"?([^"]*)"?\s*$', re.IGNORECASE)


def _user_search_indexes(sim: Simulator, cql: str, pfilter: str) -> list[int] | range:
    pool = sim.data.search_user_indexes(pfilter)
    if _TYPE_USER.match(cql):
        return pool[:SEARCH_USER_CAP]
    index = sim.data.index_of()
    if m := _USER_EQ.match(cql):
        i = index.get(m.group(1))
        return [i] if i is not None and i in pool else []
    if m := _USER_IN.match(cql):
        ids = [x.strip().strip('"') for x in m.group(1).split(",")]
        return [index[x] for x in ids if x in index and index[x] in pool]
    if m := _FULLNAME.match(cql):
        needle = m.group(1).lower()
        return [i for i in pool if needle in str(sim.data.user_core(i)["publicName"]).lower()]
    raise HTTPError(confluence_error(400, f"Could not parse cql : {cql[:200]}"))


def search_user(sim: Simulator, req: Request) -> Response:
    """GET search/user: offset paging, totalSize equal to the page size, 10k cap."""
    cql = req.arg("cql")
    if not cql:
        raise HTTPError(confluence_error(400, "The CQL query parameter is required."))
    pfilter = req.arg("sitePermissionTypeFilter", "none") or "none"
    if pfilter not in ("none", "externalCollaborator", "all"):
        raise HTTPError(confluence_error(400, f"Invalid sitePermissionTypeFilter: {pfilter}"))
    start = req.int_arg("start", 0)
    asked = min(req.int_arg("limit", 25), USER_LIMIT)
    limit = sim.strict.capped("search_user", asked)
    indexes = _user_search_indexes(sim, cql, pfilter)
    page = indexes[start : start + limit]
    results = []
    for i in page:
        u = user_view(sim, i, "search_user")
        results.append(
            {
                "user": u,
                "title": u["publicName"],
                "excerpt": "",
                "url": f"/people/{u['accountId']}",
                "breadcrumbs": [],
                "entityType": "user",
                "iconCssClass": "aui-icon content-type-profile",
                "lastModified": iso_ms(sim.data.opts.audit_start + i * 60_000),
                "score": 0.0,
            }
        )
    extra = {}
    if limit and start + len(page) < len(indexes) and sim.strict.user_next_links:
        params = [*forward_params(req, "start", "limit"), ("limit", str(limit))]
        extra["next"] = rel_link(req.path, [*params, ("start", str(start + limit))])
    body = {
        "results": results,
        "start": start,
        "limit": limit,
        "size": len(results),
        # The real endpoint reports the page size here, not the total.
        "totalSize": len(results),
        "cqlQuery": cql,
        "searchDuration": 17 + len(results) % 13,
        "_links": links(sim.site_url, req, **extra),
    }
    sim.strict.echo(body, asked, limit)
    return json_response(200, body)


def get_user(sim: Simulator, req: Request) -> Response:
    """GET user?accountId=: one user with accountStatus, or 404."""
    aid = req.arg("accountId")
    if not aid:
        raise HTTPError(confluence_error(400, "accountId is required"))
    i = sim.data.index_of().get(aid)
    if i is None:
        raise HTTPError(confluence_error(404, f"No user found with accountId: {aid[:80]}"))
    return json_response(200, user_view(sim, i, "user", full=True))


def user_bulk(sim: Simulator, req: Request) -> Response:
    """GET user/bulk: at most 200 ids; unknown ids are silently left out, as on Cloud."""
    ids = [x for v in req.query.get("accountId", []) for x in v.split(",") if x]
    if not ids:
        raise HTTPError(confluence_error(400, "At least one accountId is required"))
    if len(ids) > USER_LIMIT:
        raise HTTPError(
            confluence_error(400, f"A maximum of {USER_LIMIT} accountIds may be requested")
        )
    limit = min(req.int_arg("limit", USER_LIMIT, minimum=1), USER_LIMIT)
    index = sim.data.index_of()
    results = [user_view(sim, index[x], "user_bulk", full=True) for x in ids if x in index]
    results = results[:limit]
    body = {
        "results": results,
        "start": 0,
        "limit": limit,
        "size": len(results),
        "_links": links(sim.site_url, req),
    }
    return json_response(200, body)


def user_current(sim: Simulator, req: Request) -> Response:
    """GET user/current: the account the credentials belong to."""
    return json_response(200, user_view(sim, req.principal.user_index, "user_current", full=True))


def users_bulk_v2(sim: Simulator, req: Request) -> Response:
    """POST /wiki/api/v2/users-bulk: v2 users (with accountStatus) for a body of account ids."""
    body = req.json_body()
    ids = body.get("accountIds")
    if not isinstance(ids, list) or not ids or not all(isinstance(x, str) for x in ids):
        raise HTTPError(confluence_error(400, "accountIds must be a non-empty list of strings"))
    if len(ids) > V2_BULK_MAX:
        raise HTTPError(confluence_error(400, f"At most {V2_BULK_MAX} accountIds are accepted"))
    index = sim.data.index_of()
    results = []
    for x in ids:
        if x not in index:
            continue
        full = user_view(sim, index[x], "users_bulk_v2", full=True)
        user = {k: full.get(k) for k in V2_USER_FIELDS if k in full}
        user["personalSpaceId"] = None
        results.append(user)
    return json_response(200, {"results": results, "_links": {}})


#: The fields of a v2 User (confluence.js src/v2/models/user.ts).
V2_USER_FIELDS = ("accountId", "accountType", "accountStatus", "displayName", "email",
                  "publicName", "profilePicture", "timeZone", "isExternalCollaborator")  # fmt: skip


# ---- groups -----------------------------------------------------------------------------


def groups(sim: Simulator, req: Request) -> Response:
    """GET group: alphabetical, offset paging, limit at most 200."""
    start = req.int_arg("start", 0)
    asked = min(req.int_arg("limit", USER_LIMIT), USER_LIMIT)
    limit = sim.strict.capped("group", asked)
    all_groups = sim.data.groups
    page = range(start, min(len(all_groups), start + limit))
    extra = {}
    if limit and page.stop < len(all_groups):
        params = [*forward_params(req, "start", "limit"), ("limit", str(limit))]
        extra["next"] = rel_link(req.path, [*params, ("start", str(start + limit))])
    results = [sim.data.group_json(k) for k in page]
    body = {
        "results": results,
        "start": start,
        "limit": limit,
        "size": len(results),
        "_links": links(sim.site_url, req, **extra),
    }
    sim.strict.echo(body, asked, limit)
    return json_response(200, body)


def group_members(sim: Simulator, req: Request) -> Response:
    """GET group/{id}/membersByGroupId: 400 above limit 200, 404 for unknown groups."""
    k = sim.data.group_by_id.get(req.params["group_id"])
    start = req.int_arg("start", 0)
    asked = req.int_arg("limit", USER_LIMIT)
    if asked > USER_LIMIT:
        raise HTTPError(confluence_error(400, f"Limit must be less than {USER_LIMIT + 1}"))
    limit = sim.strict.capped("group_members", asked)
    if k is None:
        raise HTTPError(
            confluence_error(404, f"No group found with id: {req.params['group_id'][:80]}")
        )
    members = sim.data.members[k]
    page = members[start : start + limit]
    extra = {}
    if limit and start + len(page) < len(members):
        params = [*forward_params(req, "start", "limit"), ("limit", str(limit))]
        extra["next"] = rel_link(req.path, [*params, ("start", str(start + limit))])
    results = [user_view(sim, i, "group_members") for i in page]
    body: dict[str, Any] = {
        "results": results,
        "start": start,
        "limit": limit,
        "size": len(results),
        "_links": links(sim.site_url, req, **extra),
    }
    if req.arg("shouldReturnTotalSize") == "true":
        body["totalSize"] = len(members)
    sim.strict.echo(body, asked, limit)
    return json_response(200, body)


# ---- audit ------------------------------------------------------------------------------


def _epoch_arg(req: Request, name: str, default: int) -> int:
    raw = req.arg(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise HTTPError(
            confluence_error(400, f"{name} must be epoch time in milliseconds, got {raw[:40]}")
        ) from None


def audit(sim: Simulator, req: Request) -> Response:
    """GET audit: newest first, epoch-ms bounds inclusive, limit clamped to 1000, no ids."""
    append, late, late_by = sim.faults.audit_tick()
    if append:
        sim.data.add_extra(append, None)
        sim.faults.count("append", append)
    if late:
        sim.data.add_extra(late, None, late_by_ms=late_by)
        sim.faults.count("late_records", late)
    start_ms = _epoch_arg(req, "startDate", -(2**62))
    end_ms = _epoch_arg(req, "endDate", 2**62)
    start = req.int_arg("start", 0)
    asked = min(req.int_arg("limit", AUDIT_LIMIT), AUDIT_LIMIT)
    limit = sim.strict.capped("audit", asked)
    needle = req.arg("searchString") or ""
    sliced = None if needle else sim.data.audit_slice(start_ms, end_ms, start, limit)
    if sliced is not None:
        return _audit_response(sim, req, sliced, asked=asked, limit=limit, start=start)
    # Keyed by what the bounds select, not their values, so a client that moves endDate
    # to "now" on every run still reads warm pages.
    key = (*sim.data.audit_selection(start_ms, end_ms), start, limit, hash(needle))
    cached = sim.page_cache.get(key)
    if cached is None:
        if needle:
            page = sim.data.audit_search(start_ms, end_ms, needle, start, limit)
        else:
            page = sim.data.audit_page(start_ms, end_ms, start, limit)
        cached = (("[" + ",".join(page) + "]").encode(), len(page))
        sim.page_cache.put(key, cached)
    return _audit_response(sim, req, cached, asked=asked, limit=limit, start=start)


def _audit_response(
    sim: Simulator, req: Request, page: tuple[bytes, int], *, asked: int, limit: int, start: int
) -> Response:
    """The page (a JSON array and its length) in the envelope the audit API answers with."""
    results, size = page
    tail = {"start": start, "limit": limit, "size": size, "_links": links(sim.site_url, req)}
    sim.strict.echo(tail, asked, limit)
    body = b'{"results":' + results + b"," + dumps(tail)[1:]
    return Response(200, body)


def audit_retention(sim: Simulator, req: Request) -> Response:
    """GET audit/retention."""
    return json_response(200, {"number": 12, "units": "MONTHS"})


# ---- licence (private, site-root Basic auth only) ----------------------------------------


def licence(sim: Simulator, req: Request) -> Response:
    """GET /wiki/rest/license/1.0/license/{userCount,maxUsers,remainingSeats}.

    Unofficial and unsupported (CONFCLOUD-82766): strict mode makes it gone.
    """
    mode = sim.strict.licence
    if mode == "404":
        raise HTTPError(json_response(404, {"message": f"null for uri: {req.path}"}))
    if mode == "410":
        raise HTTPError(gone_error(req.path))
    if mode == "html":
        # What a retired page looks like once the site's front end answers for it.
        page = b"<!DOCTYPE html><html><head><title>Log in - Confluence</title></head></html>"
        return Response(200, page, content_type="text/html;charset=UTF-8")
    used = sim.data.licensed_active()
    max_users = sim.data.opts.max_users
    if max_users is None:
        tiers = [10, 25, 50, 100, 200, 300, 400, 500, 1000, 2000, 5000, 10000, 50000]
        max_users = next((t for t in tiers if t >= used + 1), used + 1000)
    count = {"userCount": used, "maxUsers": max_users, "remainingSeats": max_users - used}
    return json_response(200, {"count": count[req.params["what"]]})


def gone_error(path: str) -> Response:
    """410 as Confluence answers for a v1 route it has removed."""
    return confluence_error(
        410,
        "com.atlassian.confluence.api.service.exceptions.GoneException: "
        f"The API {path} has been removed; use the Confluence REST API v2.",
    )


ROUTES: list[Route] = [
    Route(
        "system_info",
        re.compile(r"^/wiki/rest/api/settings/systemInfo$"),
        system_info,
        _scopes("manage:confluence-configuration", "read:configuration:confluence"),
    ),
    Route(
        "search_user",
        re.compile(r"^/wiki/rest/api/search/user$"),
        search_user,
        _scopes("read:content-details:confluence"),
    ),
    Route(
        "user_bulk",
        re.compile(r"^/wiki/rest/api/user/bulk$"),
        user_bulk,
        _scopes("read:confluence-user", "read:content-details:confluence"),
    ),
    Route(
        "users_bulk_v2",
        re.compile(r"^/wiki/api/v2/users-bulk$"),
        users_bulk_v2,
        _scopes("read:user:confluence"),
        methods=("POST",),
    ),
    Route(
        "user_current",
        re.compile(r"^/wiki/rest/api/user/current$"),
        user_current,
        _scopes("read:confluence-user", "read:content-details:confluence"),
    ),
    Route(
        "user",
        re.compile(r"^/wiki/rest/api/user$"),
        get_user,
        _scopes("read:confluence-user", "read:content-details:confluence"),
    ),
    Route(
        "group",
        re.compile(r"^/wiki/rest/api/group$"),
        groups,
        _scopes("read:confluence-groups", "read:group:confluence"),
    ),
    Route(
        "group_members",
        re.compile(r"^/wiki/rest/api/group/(?P<group_id>[^/]+)/membersByGroupId$"),
        group_members,
        _scopes("read:confluence-groups", "read:group:confluence read:user:confluence"),
    ),
    Route(
        "audit",
        re.compile(r"^/wiki/rest/api/audit$"),
        audit,
        _scopes("read:audit-log:confluence"),
        admin=True,
    ),
    Route(
        "audit_retention",
        re.compile(r"^/wiki/rest/api/audit/retention$"),
        audit_retention,
        _scopes("read:audit-log:confluence"),
        admin=True,
    ),
    Route(
        "search",
        re.compile(r"^/wiki/rest/api/search$"),
        content_search,
        _scopes("search:confluence", "read:content-details:confluence"),
    ),
    Route(
        "licence",
        re.compile(
            r"^/wiki/rest/license/1\.0/license/(?P<what>userCount|maxUsers|remainingSeats)$"
        ),
        licence,
        (),
        licence=True,
    ),
]
