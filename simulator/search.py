"""GET /wiki/rest/api/search: CQL over content, cursor pagination, history expansion."""

from __future__ import annotations

import base64
import json
import zlib
from typing import TYPE_CHECKING, Any

from simulator import cql
from simulator.data import iso_ms
from simulator.users_view import user_view
from simulator.web import (
    HTTPError,
    Request,
    Response,
    confluence_error,
    forward_params,
    json_response,
    links,
    rel_link,
)

if TYPE_CHECKING:
    from simulator.site import Simulator

DEFAULT_LIMIT = 25
MAX_LIMIT = 250
ICONS = {
    "page": "content-type-page",
    "blogpost": "content-type-blogpost",
    "comment": "content-type-comment",
    "attachment": "content-type-attachment-image",
}


def _bad_cql(text: str, reason: str) -> HTTPError:
    return HTTPError(
        confluence_error(
            400,
            "com.atlassian.confluence.api.service.exceptions.BadRequestException: "
            f"Could not parse cql : {text[:200]} ({reason})",
        )
    )


def encode_cursor(offset: int, query: str) -> str:
    """Return an opaque cursor bound to one query, as Cloud's are."""
    raw = json.dumps({"o": offset, "q": zlib.crc32(query.encode())}).encode()
    return "_sa_" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, query: str) -> int:
    """Return the offset a cursor stands for, or answer 400 if it is not ours."""
    invalid = HTTPError(confluence_error(400, "Invalid cursor for this query"))
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor.removeprefix("_sa_") + "=="))
        offset, bound_to = int(data["o"]), data["q"]
    except (ValueError, KeyError, TypeError):
        raise invalid from None
    if bound_to != zlib.crc32(query.encode()):
        raise invalid
    return offset


def content_search(sim: Simulator, req: Request) -> Response:
    """Answer a content search page."""
    text = req.arg("cql")
    if not text:
        raise HTTPError(confluence_error(400, "The CQL query parameter is required."))
    data = sim.data
    offset_ms = sim.strict.cql_utc_offset_minutes * 60_000
    try:
        query = cql.parse(text, data.account_id, offset_ms)
    except cql.CQLError as e:
        raise _bad_cql(text, str(e)) from None
    matches = [it for it in data.content if query.predicate(it)]
    if query.order_field:
        key = {"lastmodified": "modified", "created": "created", "title": "title", "id": "id"}
        field = key.get(query.order_field, "modified")
        matches.sort(key=lambda it: (it[field], it["id"]), reverse=query.descending)
    asked = min(req.int_arg("limit", DEFAULT_LIMIT), MAX_LIMIT)
    limit = sim.strict.capped("search", asked)
    cursor = req.arg("cursor")
    start = decode_cursor(cursor, text) if cursor else req.int_arg("start", 0)
    page = matches[start : start + limit]
    expand = {e.strip() for v in req.query.get("expand", []) for e in v.split(",")}
    results = [_result(sim, it, expand) for it in page]
    extra = {}
    keep = forward_params(req, "cursor", "start", "next", "prev", "limit")
    if limit and start + len(page) < len(matches):
        nxt = start + limit
        params = [("next", "true"), ("cursor", encode_cursor(nxt, text)), *keep]
        extra["next"] = rel_link(req.path, [*params, ("limit", str(limit)), ("start", str(nxt))])
    if start > 0:
        prev = max(0, start - limit)
        params = [("prev", "true"), ("cursor", encode_cursor(prev, text)), *keep]
        extra["prev"] = rel_link(req.path, [*params, ("limit", str(limit)), ("start", str(prev))])
    body = {
        "results": results,
        "start": start,
        "limit": limit,
        "size": len(results),
        "totalSize": len(matches),
        "cqlQuery": text,
        "searchDuration": 40 + len(results),
        "_links": links(sim.site_url, req, **extra),
    }
    sim.strict.echo(body, asked, limit)
    return json_response(200, body)


def _result(sim: Simulator, it: dict[str, Any], expand: set[str]) -> dict[str, Any]:
    base = sim.site_url + "/wiki"
    key, space_name = it["space"]
    cid = it["id"]
    expandable = {
        "container": "",
        "metadata": "",
        "operations": "",
        "children": f"/rest/api/content/{cid}/child",
        "restrictions": f"/rest/api/content/{cid}/restriction/byOperation",
        "history": f"/rest/api/content/{cid}/history",
        "ancestors": "",
        "body": "",
        "version": "",
        "descendants": f"/rest/api/content/{cid}/descendant",
        "space": f"/rest/api/space/{key}",
    }
    content: dict[str, Any] = {
        "id": cid,
        "type": it["type"],
        "status": "current",
        "title": it["title"],
        "childTypes": {},
        "macroRenderedOutput": {},
        "restrictions": {},
        "_expandable": expandable,
        "_links": {
            "webui": f"/spaces/{key}/pages/{cid}",
            "self": f"{base}/rest/api/content/{cid}",
            "tinyui": f"/x/{cid}",
        },
    }
    if expand & {"content.history", "content.history.lastUpdated"}:
        expandable.pop("history")
        history: dict[str, Any] = {
            "latest": True,
            "createdBy": user_view(sim, it["creator"]),
            "createdDate": iso_ms(it["created"]),
            "_expandable": {
                "lastUpdated": "",
                "previousVersion": "",
                "contributors": "",
                "nextVersion": "",
            },
        }
        if "content.history.lastUpdated" in expand:
            history["_expandable"].pop("lastUpdated")
            history["lastUpdated"] = _version(sim, it)
        content["history"] = history
    if "content.version" in expand:
        expandable.pop("version")
        content["version"] = _version(sim, it)
    return {
        "content": content,
        "title": it["title"],
        "excerpt": "",
        "url": f"/spaces/{key}/pages/{cid}",
        "resultGlobalContainer": {"title": space_name, "displayUrl": f"/spaces/{key}"},
        "breadcrumbs": [],
        "entityType": "content",
        "iconCssClass": "aui-icon " + ICONS[it["type"]],
        "lastModified": iso_ms(it["modified"]),
        "friendlyLastModified": iso_ms(it["modified"])[:10],
        "score": 1.0,
    }


def _version(sim: Simulator, it: dict[str, Any]) -> dict[str, Any]:
    return {
        "by": user_view(sim, it["modifier"]),
        "when": iso_ms(it["modified"]),
        "friendlyWhen": iso_ms(it["modified"])[:10],
        "message": "",
        "number": it["version"],
        "minorEdit": False,
        "_expandable": {"collaborators": "", "content": f"/rest/api/content/{it['id']}"},
    }
