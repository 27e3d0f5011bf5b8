"""`/docs`: the OpenAPI document as one self-contained HTML page, rendered on the server.

Not Swagger UI: FastAPI's page loads Swagger UI's script and CSS from a CDN (nothing shows offline or behind a
policy that allows only the gateway's own origin) and starts it with an inline script (refused by a strict
Content-Security-Policy); vendoring it would add megabytes of JavaScript to a gateway for a try-it-out button
that curl and the SDKs do better. This page has no script and loads nothing: every operation, its credentials,
parameters, body fields and statuses, and a link to `/openapi.json` for any OpenAPI tool (Swagger UI,
Postman, client generators). It is sent with its own policy: nothing but its one stylesheet, pinned by
hash."""

from __future__ import annotations

import base64
import hashlib
import html
import re
from collections.abc import Sequence
from typing import Any

from gateway.http.openapi.schema import Json

__all__ = ["PAGE_POLICY", "docs_page"]

_STYLE = (
    "body{font:15px/1.5 system-ui,sans-serif;max-width:64rem;margin:2rem auto;padding:0 1rem;color:#1d1d1f}"
    "code{font:13px ui-monospace,monospace;background:#f2f2f4;padding:0 .25em;border-radius:3px}"
    "section{border-top:1px solid #ddd;padding:.5rem 0}h3 code{font-size:15px}"
    "table{border-collapse:collapse;width:100%;margin:.5rem 0}"
    "td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}"
    "th{background:#f7f7f9}.m{font-weight:700;text-transform:uppercase}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
PAGE_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; form-action 'none';"
    " frame-ancestors 'none'"
)
_METHODS = ("get", "post", "put", "patch", "delete")
_CODE = re.compile(r"`([^`]+)`")


def _text(markdown: str) -> str:
    """Plain text with `code` spans, escaped (the document's descriptions are short markdown)."""
    return _CODE.sub(r"<code>\1</code>", html.escape(markdown, quote=False))


def _type(schema: Json) -> str:
    """A schema in a few words: `integer`, `string (fast|deliberate)`, `array of ChatMessage`..."""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    for combined in ("anyOf", "oneOf", "allOf"):
        if combined in schema:
            return " | ".join(_type(part) for part in schema[combined])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if "enum" in schema:
        return f"{kind} ({'|'.join(str(value) for value in schema['enum'])})"
    return str(kind)


def _resolve(document: Json, schema: Json) -> Json:
    if "$ref" in schema:
        resolved: Json = document["components"]["schemas"][str(schema["$ref"]).rsplit("/", 1)[-1]]
        return resolved
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return _resolve(document, schema["allOf"][0])
    return schema


def _table(headings: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    head = "".join(f"<th>{heading}</th>" for heading in headings)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _body(document: Json, operation: Json) -> str:
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if content is None:
        return ""
    schema = content["schema"]
    resolved = _resolve(document, schema)
    required = set(resolved.get("required", ()))
    rows = [
        (
            f"<code>{html.escape(name)}</code>",
            html.escape(_type(field)),
            "yes" if name in required else "",
            _text(_resolve(document, field).get("description", field.get("description", ""))),
        )
        for name, field in resolved.get("properties", {}).items()
    ]
    intro = f"<p>Body: <code>{html.escape(_type(schema))}</code> (JSON)</p>"
    return intro + (_table(("field", "type", "required", ""), rows) if rows else "")


def _parameters(operation: Json) -> str:
    rows = [
        (
            f"<code>{html.escape(p['name'])}</code>",
            p["in"],
            html.escape(_type(p.get("schema", {}))),
            _text(p.get("description", "")),
        )
        for p in operation.get("parameters", ())
    ]
    return _table(("parameter", "in", "type", ""), rows) if rows else ""


def _responses(operation: Json) -> str:
    rows = []
    for status, response in operation["responses"].items():
        kinds = [
            f"<code>{html.escape(media)}</code> {html.escape(_type(item.get('schema', {})))}"
            for media, item in response.get("content", {}).items()
        ]
        rows.append((f"<b>{status}</b>", _text(response.get("description", "")), "<br>".join(kinds)))
    return _table(("status", "when", "body"), rows)


def _security(document: Json, operation: Json) -> str:
    needs: list[Json] = operation.get("security", document.get("security")) or []
    names = [name for need in needs for name in need]
    return "none" if not names else " or ".join(f"<code>{name}</code>" for name in names)


def _operation(document: Json, path: str, method: str, operation: Json) -> str:
    anchor = html.escape(operation.get("operationId", f"{method}{path}"))
    return (
        f'<section id="{anchor}"><h3><span class="m">{method}</span> <code>{html.escape(path)}</code></h3>'
        f"<p>{_text(operation.get('summary', ''))}</p>"
        f"<p>Credentials: {_security(document, operation)}</p>"
        f"{_parameters(operation)}{_body(document, operation)}{_responses(operation)}</section>"
    )


def docs_page(document: dict[str, Any], spec_url: str) -> str:
    """The page of `document`, which is served at `spec_url`."""
    info = document["info"]
    by_tag: dict[str, list[str]] = {tag["name"]: [] for tag in document.get("tags", ())}
    for path, item in document["paths"].items():
        for method in _METHODS:
            if method in item:
                operation = item[method]
                tag = (operation.get("tags") or ["other"])[0]
                by_tag.setdefault(tag, []).append(_operation(document, path, method, operation))
    schemes = "".join(
        f"<li><code>{html.escape(name)}</code>: {_text(scheme.get('description', ''))}</li>"
        for name, scheme in document.get("components", {}).get("securitySchemes", {}).items()
    )
    tags = {tag["name"]: tag.get("description", "") for tag in document.get("tags", ())}
    sections = "".join(
        f"<h2>{html.escape(tag)}</h2><p>{_text(tags.get(tag, ''))}</p>{''.join(operations)}"
        for tag, operations in by_tag.items()
        if operations
    )
    url = html.escape(spec_url)
    paragraphs = "".join(f"<p>{_text(part)}</p>" for part in info.get("description", "").split("\n\n"))
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(info['title'])} API</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(info['title'])} <small>{html.escape(info['version'])}</small></h1>"
        f"<p>{_text(info.get('summary', ''))}</p>"
        f'<p>The OpenAPI {html.escape(document["openapi"])} document: <a href="{url}">{url}</a>'
        " (load it into any OpenAPI tool).</p>"
        f"{paragraphs}<h2>Credentials</h2><ul>{schemes}</ul>{sections}</body></html>"
    )
