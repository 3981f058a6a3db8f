//! `GET /ui/incidents` and `GET /ui/incidents/{id}`: pages for responders.
//!
//! The pages are public shells holding no incident data: a small inline script
//! asks for an API token once, keeps it in the tab's `sessionStorage`, fetches
//! the JSON API with an `Authorization` header and renders. So no session, no
//! cookie (nothing to forge cross-site) and the token never appears in a URL,
//! a log line or a browser history entry.
//!
//! Everything from the API is rendered as text nodes or checked attributes,
//! never as markup (event-derived strings are hostile); the only value the
//! server puts in a page, the incident id from the path, is HTML-escaped. A
//! strict Content-Security-Policy with a per-response nonce backs this up: no
//! other script, no external asset, no framing.

use axum::extract::Path;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

const CSS: &str = include_str!("page.css");
const JS: &str = include_str!("page.js");

/// The incident list with filters.
#[utoipa::path(
    get,
    path = "/ui/incidents",
    tag = "pages",
    responses((status = 200, description = "HTML page; it asks for a token and fetches `/incidents`", content_type = "text/html"))
)]
pub(super) async fn list_page() -> Response {
    page("list", "", "faultline · incidents")
}

/// One incident: summary, root causes, chart, timeline, links, actions.
#[utoipa::path(
    get,
    path = "/ui/incidents/{id}",
    tag = "pages",
    params(("id" = String, Path, description = "Incident id (`inc_...`)")),
    responses((status = 200, description = "HTML page; it asks for a token and fetches `/incidents/{id}`", content_type = "text/html"))
)]
pub(super) async fn incident_page(Path(id): Path<String>) -> Response {
    page("incident", &id, "faultline · incident")
}

fn page(kind: &str, incident_id: &str, title: &str) -> Response {
    let nonce = format!("{:032x}", rand::random::<u128>());
    let html = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{title}</title>
<style nonce="{nonce}">{CSS}</style>
</head>
<body data-page="{kind}" data-incident-id="{id}">
<header><a class="home" href="/ui/incidents">faultline</a><span class="spacer"></span><button id="forget" type="button">Forget token</button></header>
<main id="app"><noscript>This page needs JavaScript: it fetches incidents with your API token.</noscript></main>
<script nonce="{nonce}">{JS}</script>
</body>
</html>
"#,
        title = escape(title),
        kind = escape(kind),
        id = escape(incident_id),
    );
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
         connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'"
    );
    (
        [
            (header::CONTENT_SECURITY_POLICY, csp),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            (header::REFERRER_POLICY, "no-referrer".to_string()),
            (header::X_FRAME_OPTIONS, "DENY".to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Html(html),
    )
        .into_response()
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '`' => out.push_str("&#96;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<script>alert("x")</script>&'`"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;&#96;"
        );
    }

    #[test]
    fn the_script_never_writes_markup() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ] {
            assert!(!JS.contains(sink), "page.js uses {sink}");
        }
        assert!(
            !JS.contains("</script"),
            "page.js would end its script element"
        );
        assert!(
            !CSS.contains("</style"),
            "page.css would end its style element"
        );
        assert!(!JS.contains("?token") && !JS.contains("&token"));
    }
}
