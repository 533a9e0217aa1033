"""Discovery documents: /version, /api, /api/v1, /apis and group resource lists."""

from __future__ import annotations

from typing import Any

from .resources import ResourceType

VERSION: dict[str, str] = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-dnsd",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T00:00:00Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}

_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def api_versions(server_address: str) -> dict[str, Any]:
    """`GET /api`."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def _group(name: str, version: str) -> dict[str, Any]:
    gv = {"groupVersion": f"{name}/{version}", "version": version}
    return {"name": name, "versions": [gv], "preferredVersion": gv}


def api_group_list(groups: list[str]) -> dict[str, Any]:
    """`GET /apis`."""
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(g, "v1") for g in groups]}


def api_group(name: str) -> dict[str, Any]:
    """`GET /apis/<group>`."""
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name, "v1")}


def resource_list(group_version: str, resources: list[ResourceType]) -> dict[str, Any]:
    """`GET /api/v1` or `/apis/<group>/v1`."""
    out: list[dict[str, Any]] = []
    for rt in resources:
        entry: dict[str, Any] = {
            "name": rt.name,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": _VERBS if rt.namespaced else [v for v in _VERBS if v != "deletecollection"],
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        out.append(entry)
        for sub in rt.subresources:
            out.append(
                {
                    "name": f"{rt.name}/{sub}",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": out,
    }
