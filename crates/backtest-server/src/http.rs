//! Plain HTTP endpoints: `/available-ranges`, `/usage` and `/health`.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use simulator_api::usage::UsageReport;

use crate::{auth, state::ServerState};

/// `GET /available-ranges`: the data set's bundles.
pub async fn available_ranges(state: web::Data<Arc<ServerState>>) -> HttpResponse {
    HttpResponse::Ok().json(state.config.available_ranges())
}

#[derive(Debug, Deserialize)]
pub struct UsageQuery {
    since: Option<String>,
    until: Option<String>,
}

/// `GET /usage?since=&until=`: the caller's usage. Counts cover the whole
/// life of this server; the window is echoed back as asked (defaulting to
/// the server's start and now).
pub async fn usage(
    req: HttpRequest,
    query: web::Query<UsageQuery>,
    state: web::Data<Arc<ServerState>>,
) -> HttpResponse {
    let key = auth::presented_key(&req);
    if !auth::is_authorized(&state.config.api_keys, key) {
        return HttpResponse::Unauthorized().body("missing or unknown X-API-Key");
    }
    let parse = |value: &Option<String>, name: &str| -> Result<Option<DateTime<Utc>>, String> {
        value
            .as_deref()
            .map(|v| {
                DateTime::parse_from_rfc3339(v)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| format!("`{name}` is not an RFC 3339 time: {e}"))
            })
            .transpose()
    };
    let (since, until) = match (parse(&query.since, "since"), parse(&query.until, "until")) {
        (Ok(since), Ok(until)) => (since, until),
        (Err(e), _) | (_, Err(e)) => return HttpResponse::BadRequest().body(e),
    };
    let key_name = state.key_name(key);
    let (sessions, compute) = state.usage(&key_name);
    HttpResponse::Ok().json(UsageReport {
        api_key_name: key_name,
        since: since.unwrap_or(state.started_at),
        until: until.unwrap_or_else(Utc::now),
        sessions,
        compute,
    })
}

/// `GET /health`: liveness for scripts.
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}
