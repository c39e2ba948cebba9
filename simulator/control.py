"""The control API under /_sim/: counters, faults, grants, audit appends, clock, tokens."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from simulator.faults import FaultConfig
from simulator.strict import Strictness
from simulator.web import (
    HTTPError,
    Request,
    Response,
    forward_params,
    json_response,
    links,
    rel_link,
)

if TYPE_CHECKING:
    from simulator.site import Simulator

Body = dict[str, Any]


def handle(sim: Simulator, req: Request) -> Response:
    """Answer one control request; never subject to faults or auth."""
    path = req.path.removeprefix("/_sim")
    action = ACTIONS.get(path)
    if action is None:
        return json_response(404, {"error": f"unknown control route {path}"})
    try:
        body: Body = req.json_body() if req.method == "POST" else {}
        return json_response(200, action(sim, body, req.method == "POST"))
    except HTTPError as e:
        return e.response
    except (ValueError, TypeError, KeyError) as e:
        return json_response(400, {"error": str(e)})


def _faults(sim: Simulator, body: Body, post: bool) -> Any:
    if post:
        sim.faults.configure(FaultConfig.from_dict(body))
    return sim.faults.config.as_dict()


def _reset(sim: Simulator, body: Body, post: bool) -> Any:
    sim.reset_stats()
    return sim.stats()


def _grant(sim: Simulator, body: Body, post: bool) -> Any:
    admin = bool(body.get("admin", True))
    scopes = body.get("scopes")
    if not isinstance(scopes, list):
        raise TypeError("grant needs a list of scopes")
    # A non-admin grant belongs to an ordinary licensed user, not the site admin.
    user = int(body.get("user_index", 0 if admin else 1))
    return {
        "refresh_token": sim.tokens.grant([str(s) for s in scopes], admin=admin, user_index=user)
    }


def _user_index(sim: Simulator, body: Body) -> int | None:
    """The user named by ``account_id`` in a control body (None when absent)."""
    if "account_id" not in body:
        return None
    index = sim.data.index_of().get(str(body["account_id"]))
    if index is None:
        raise ValueError(f"no user has accountId {body['account_id']!r}")
    return int(index)


def _append(sim: Simulator, body: Body, post: bool) -> Any:
    count = int(body.get("count", 1))
    at = int(body["creation_date"]) if "creation_date" in body else None
    dates = sim.data.add_extra(
        count,
        at,
        late_by_ms=int(body.get("late_by_ms", 0)),
        author=_user_index(sim, body),
    )
    return {"appended": count, "creationDates": dates}


def _edit_content(sim: Simulator, body: Body, post: bool) -> Any:
    author = _user_index(sim, body)
    if author is None:
        raise ValueError("content/edit needs the account_id of the editing user")
    when = int(body.get("modified", time.time() * 1000))
    ids = sim.data.edit_content(
        author, int(body.get("count", 1)), when, unindexed=sim.strict.index_lag
    )
    return {"ids": ids, "modified": when, "indexed": not sim.strict.index_lag}


def _index_content(sim: Simulator, body: Body, post: bool) -> Any:
    return {"indexed": sim.data.index_content()}


def _strict(sim: Simulator, body: Body, post: bool) -> Any:
    if post:
        # `{}` is the lenient simulator again; `{"preset": true, ...}` the --strict preset.
        sim.strict = Strictness.from_dict(body)
    return sim.strict.as_dict()


def _quota_reset(sim: Simulator, body: Body, post: bool) -> Any:
    sim.quota.reset()
    return {"reset": True}


def _last_active(sim: Simulator, body: Body, post: bool) -> Any:
    user = _user_index(sim, body)
    if user is None:
        raise ValueError("admin/last-active needs the account_id of the user")
    date = str(body["date"])
    datetime.date.fromisoformat(date)  # a 400 for anything that is not YYYY-MM-DD
    sim.data.last_active_overrides[user] = date
    return {"account_id": body["account_id"], "last_active": date}


def _remove_user(sim: Simulator, body: Body, post: bool) -> Any:
    user = _user_index(sim, body)
    if user is None:
        raise ValueError("users/remove needs the account_id of the user")
    sim.data.remove_user(user)
    return {"removed": body["account_id"]}


def _config(sim: Simulator, body: Body, post: bool) -> Any:
    if "token_ttl" in body:
        sim.tokens.token_ttl = int(body["token_ttl"])
    if "reuse_leeway" in body:
        sim.tokens.reuse_leeway = int(body["reuse_leeway"])
    return {"token_ttl": sim.tokens.token_ttl, "reuse_leeway": sim.tokens.reuse_leeway}


def _consent(sim: Simulator, body: Body, post: bool) -> Any:
    if post:
        consent = str(body.get("consent", "accept"))
        if consent not in ("accept", "deny"):
            raise ValueError("consent must be accept or deny")
        sim.tokens.consent = consent
        sim.tokens.consent_admin = bool(body.get("admin", True))
    return {"consent": sim.tokens.consent, "admin": sim.tokens.consent_admin}


def _clock(sim: Simulator, body: Body, post: bool) -> Any:
    sim.tokens.clock_offset += float(body.get("advance_s", 0))
    return {"offset_s": sim.tokens.clock_offset}


def info(sim: Simulator, body: Body | None = None, post: bool = False) -> Any:
    """Describe the data set, so tests can compute what a full sync must return."""
    d = sim.data
    o = d.opts
    return {
        "url": sim.url,
        "site_url": sim.site_url,
        "cloud_id": sim.creds.cloud_id,
        "seed": o.seed,
        "users": o.users,
        "guests": o.guests,
        "groups": len(d.groups),
        "licensed_active": d.licensed_active(),
        "audit_records": d.audit_total(),
        "audit_oldest": d.dates[0] if len(d.dates) else None,
        "audit_newest": d.newest_date(),
        "content": len(d.content),
        # The Admin API's listing: managed accounts of the site, and of the organization.
        "managed_licensed": sum(1 for i in range(o.users) if d.is_managed(i)),
        "managed_accounts": sum(1 for i in range(d.n_total) if d.is_managed(i))
        + len(d.org_only_accounts()),
    }


def _payload(sim: Simulator, body: Body, post: bool) -> Any:
    route = str(body["route"])
    results = body.get("results")
    if results is None:
        sim.payloads.pop(route, None)
    elif not isinstance(results, list):
        raise TypeError("payload needs 'results': a list of records, or null to clear")
    else:
        sim.payloads[route] = results
    return {"routes": sorted(sim.payloads)}


def payload_response(sim: Simulator, req: Request, results: list[Any]) -> Response:
    """Serve given results as the route would: audit dates filtered, start/limit paging."""
    if req.path.endswith("/audit"):
        lo, hi = int(req.arg("startDate") or -(2**62)), int(req.arg("endDate") or 2**62)
        results = [
            r
            for r in results
            if not isinstance(r, dict)
            or not isinstance(r.get("creationDate"), int)
            or lo <= r["creationDate"] <= hi
        ]
    if req.path.endswith("/user/bulk"):
        wanted = {x for v in req.query.get("accountId", []) for x in v.split(",")}
        results = [
            r for r in results if not isinstance(r, dict) or r.get("accountId", "") in wanted
        ]
    start, limit = req.int_arg("start", 0), req.int_arg("limit", 25)
    page = results[start : start + limit]
    extra = {}
    if start + limit < len(results):
        params = [*forward_params(req, "start", "limit"), ("limit", str(limit))]
        extra["next"] = rel_link(req.path, [*params, ("start", str(start + limit))])
    body = {"results": page, "start": start, "limit": limit, "size": len(page)}
    return json_response(200, body | {"_links": links(sim.site_url, req, **extra)})


def _raw(sim: Simulator, body: Body, post: bool) -> Any:
    """Serve a route a whole body as is: any JSON (``body``), or ``pad_bytes`` of padding."""
    route = str(body["route"])
    if body.get("clear"):
        sim.raw_bodies.pop(route, None)
    else:
        if "body" not in body and "pad_bytes" not in body:
            raise ValueError("raw needs 'body' (any JSON) or 'pad_bytes', or 'clear': true")
        sim.raw_bodies[route] = {k: body[k] for k in ("body", "pad_bytes") if k in body}
    return {"routes": sorted(sim.raw_bodies)}


def raw_response(raw: dict[str, Any]) -> Response:
    """A 200 with the stored body; padding makes a valid JSON object of that many bytes."""
    if "pad_bytes" in raw:
        pad = int(raw["pad_bytes"])
        return Response(200, b'{"results":[],"pad":"' + b"x" * pad + b'"}')
    return json_response(200, raw["body"])


ACTIONS: dict[str, Callable[[Simulator, Body, bool], Any]] = {
    "/stats": lambda sim, body, post: sim.stats(),
    "/reset-stats": _reset,
    "/faults": _faults,
    "/grant": _grant,
    "/audit/append": _append,
    "/content/edit": _edit_content,
    "/content/index": _index_content,
    "/strict": _strict,
    "/quota/reset": _quota_reset,
    "/admin/last-active": _last_active,
    "/users/remove": _remove_user,
    "/tokens": lambda sim, body, post: sim.tokens.listing(),
    "/config": _config,
    "/clock": _clock,
    "/consent": _consent,
    "/expire-access-tokens": lambda sim, body, post: {"expired": sim.tokens.expire_access_tokens()},
    "/info": info,
    "/payload": _payload,
    "/raw": _raw,
}
