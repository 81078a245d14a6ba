//! The daemon's HTTP endpoints (axum, on the daemon's tokio runtime). Read
//! only: every endpoint answers GET, and none changes anything. Handlers
//! ask the run loop for copies of the targets' state through a channel
//! ([`Request`]), so the loop alone owns the sessions.
//!
//! - `GET /metrics`: see [`super::metrics`].
//! - `GET /debug/pprof/allocs?pid=PID[&seconds=N]`: the gzipped pprof
//!   profile `record --pprof` writes, cumulative since tracing started, or
//!   with `seconds` the difference over the next N seconds (as Go's
//!   `net/http/pprof` serves it), for `go tool pprof`, Pyroscope or Parca.
//! - `GET /targets`: JSON, one object per target (see [`TargetJson`]).
//! - `GET /sd/pprof`: the traced processes as Prometheus HTTP service
//!   discovery (see [`SdGroup`]), for profile scrapers that follow
//!   Prometheus's discovery (Parca's `http_sd_configs`, Grafana Alloy's
//!   `discovery.http`): one target per process, this address with
//!   `__param_pid`, so that a scrape job follows the PIDs as services
//!   restart.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::fleet::{Request, TargetView};
use super::metrics::{self, Format};
use crate::export::pprof;

/// The longest `seconds` a profile request may wait.
pub const MAX_SECONDS: u64 = 3600;

/// What every handler has.
#[derive(Clone)]
struct Ctx {
    requests: mpsc::Sender<Request>,
    max_sites: usize,
}

/// The routes, answering through `requests`.
pub fn router(requests: mpsc::Sender<Request>, max_sites: usize) -> Router {
    Router::new()
        .route("/metrics", get(get_metrics))
        .route("/debug/pprof/allocs", get(get_allocs))
        .route("/targets", get(get_targets))
        .route("/sd/pprof", get(get_pprof_sd))
        .with_state(Ctx {
            requests,
            max_sites,
        })
}

/// An error as a plain-text response.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let mut m = message.into();
    m.push('\n');
    (status, m).into_response()
}

fn stopping() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "allocwatch is stopping")
}

impl Ctx {
    /// Every target, with counts when `counts`.
    async fn targets(&self, counts: bool) -> Result<Vec<TargetView>, Response> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request::Targets { counts, reply })
            .await
            .map_err(|_| stopping())?;
        rx.await.map_err(|_| stopping())
    }

    /// The target with this PID, with its counts now.
    async fn target(&self, pid: u32) -> Result<TargetView, Response> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request::Target { pid, reply })
            .await
            .map_err(|_| stopping())?;
        rx.await.map_err(|_| stopping())?.ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                format!("PID {pid} is not traced (see /targets)"),
            )
        })
    }
}

async fn get_metrics(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    let views = match ctx.targets(true).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = Format::from_accept(accept);
    let rendered = metrics::render(views, ctx.max_sites, format);
    // The snapshots it rendered from are freed now.
    super::trim_heap();
    match rendered {
        Ok(body) => ([(header::CONTENT_TYPE, format.content_type())], body).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The query of `/debug/pprof/allocs`.
#[derive(Debug, Deserialize)]
struct AllocsQuery {
    pid: Option<u32>,
    seconds: Option<u64>,
}

async fn get_allocs(State(ctx): State<Ctx>, Query(q): Query<AllocsQuery>) -> Response {
    let Some(pid) = q.pid else {
        return error(
            StatusCode::BAD_REQUEST,
            "which process? add ?pid=PID (the traced processes are listed at /targets)",
        );
    };
    match q.seconds {
        Some(s) if s == 0 || s > MAX_SECONDS => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("seconds must be from 1 to {MAX_SECONDS}"),
            );
        }
        _ => {}
    }
    match profile(&ctx, pid, q.seconds.map(Duration::from_secs)).await {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"allocs\"",
                ),
            ],
            body,
        )
            .into_response(),
        Err(r) => r,
    }
}

/// The gzipped profile of `pid`: cumulative, or the difference over `delta`.
async fn profile(ctx: &Ctx, pid: u32, delta: Option<Duration>) -> Result<Vec<u8>, Response> {
    let first = ctx.target(pid).await?;
    let (view, snap) = match delta {
        None => {
            let snap = first.snap.clone().unwrap_or_default();
            (first, snap)
        }
        Some(d) => {
            tokio::time::sleep(d).await;
            let last = ctx.target(pid).await?;
            let (Some(a), Some(b)) = (&first.snap, &last.snap) else {
                return Err(error(
                    StatusCode::NOT_FOUND,
                    format!("PID {pid} has no counts"),
                ));
            };
            let delta = std::sync::Arc::new(b.since(a));
            (last, delta)
        }
    };
    let target = format!("PID {pid} ({}), {}", view.meta.exe, view.meta.go_version);
    let mode = view.meta.plan_mode.unwrap_or_default();
    let meta = pprof::ProfileMeta {
        executable: view.meta.exe.clone(),
        start: SystemTime::now()
            .checked_sub(snap.elapsed)
            .unwrap_or(UNIX_EPOCH),
        comments: super::super::record::profile_comments(
            mode,
            &target,
            &snap,
            view.budget.as_ref(),
        ),
    };
    let mut body = Vec::new();
    pprof::write(&snap, &meta, &mut body)
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(body)
}

/// One target in `/targets`.
#[derive(Debug, Serialize)]
pub struct TargetJson {
    pub pid: u32,
    pub exe: String,
    pub container: String,
    /// e.g. `go1.27.3`; `null` when not traced.
    pub go_version: Option<String>,
    /// The mode counting now; `null` when not traced.
    pub mode: Option<&'static str>,
    /// When tracing started (or the process was skipped), in Unix seconds.
    pub since: u64,
    /// `tracing`, `exited` or `skipped`.
    pub state: &'static str,
    /// How an exited process went, or why a skipped one is not traced.
    pub reason: Option<String>,
    /// When an exited process went, in Unix seconds.
    pub exited: Option<u64>,
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl From<&TargetView> for TargetJson {
    fn from(v: &TargetView) -> TargetJson {
        use super::fleet::State;
        let (reason, exited) = match &v.state {
            State::Tracing => (None, None),
            State::Exited { at, how } => (Some(how.clone()), Some(unix_secs(*at))),
            State::Dropped { at, why } => (Some(why.clone()), Some(unix_secs(*at))),
            State::Skipped { reason } => (Some(reason.clone()), None),
        };
        TargetJson {
            pid: v.meta.pid,
            exe: v.meta.exe.clone(),
            container: v.meta.container.clone(),
            go_version: (!v.meta.go_version.is_empty()).then(|| v.meta.go_version.clone()),
            mode: v.mode.map(crate::plan::Mode::name),
            since: unix_secs(v.meta.since),
            state: v.state.name(),
            reason,
            exited,
        }
    }
}

async fn get_targets(State(ctx): State<Ctx>) -> Response {
    match ctx.targets(false).await {
        Ok(views) => {
            let list: Vec<TargetJson> = views.iter().map(TargetJson::from).collect();
            axum::Json(list).into_response()
        }
        Err(r) => r,
    }
}

/// One target group of Prometheus HTTP service discovery.
#[derive(Debug, Serialize)]
pub struct SdGroup {
    /// `host:port` of this daemon, as the client addressed it.
    pub targets: Vec<String>,
    /// `__param_pid` (the scrape's `pid` parameter), and `pid`, `exe`,
    /// `service_name` (the executable's base name, what Pyroscope names a
    /// service by), `container`, `go_version` and `mode`.
    pub labels: std::collections::BTreeMap<&'static str, String>,
}

/// The traced targets as discovery groups, each at `address`.
fn sd_groups(views: &[TargetView], address: &str) -> Vec<SdGroup> {
    views
        .iter()
        .filter(|v| v.state == super::fleet::State::Tracing)
        .map(|v| {
            let m = &v.meta;
            let name = m.exe.rsplit('/').next().unwrap_or(&m.exe);
            let labels = [
                ("__param_pid", m.pid.to_string()),
                ("pid", m.pid.to_string()),
                ("exe", m.exe.clone()),
                ("service_name", name.to_string()),
                ("container", m.container.clone()),
                ("go_version", m.go_version.clone()),
                (
                    "mode",
                    v.mode.map_or("", crate::plan::Mode::name).to_string(),
                ),
            ];
            SdGroup {
                targets: vec![address.to_string()],
                labels: labels.into_iter().collect(),
            }
        })
        .collect()
}

async fn get_pprof_sd(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    // The address the client reached this daemon at is the one to scrape.
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.parse::<axum::http::uri::Authority>().ok());
    let Some(host) = host else {
        return error(
            StatusCode::BAD_REQUEST,
            "no Host header: the discovered targets are this daemon at the address asked",
        );
    };
    match ctx.targets(false).await {
        Ok(views) => axum::Json(sd_groups(&views, host.as_str())).into_response(),
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use super::*;
    use crate::cmd::daemon::fleet::{Meta, State as TState};

    fn view(pid: u32, state: TState) -> TargetView {
        TargetView {
            meta: Arc::new(Meta {
                pid,
                exe: "/srv/bin/api".into(),
                container: String::new(),
                go_version: "go1.27.3".into(),
                plan_mode: Some(crate::plan::Mode::Sampled),
                since: SystemTime::now(),
            }),
            state,
            mode: Some(crate::plan::Mode::Sampled),
            snap: None,
            cost_ratio: 0.0,
            budget: None,
        }
    }

    #[test]
    fn discovery_lists_the_traced_processes_at_this_address() {
        let views = [
            view(12, TState::Tracing),
            view(
                13,
                TState::Skipped {
                    reason: "not Go".into(),
                },
            ),
        ];
        let json = serde_json::to_value(sd_groups(&views, "node1:9464")).expect("json");
        assert_eq!(
            json,
            serde_json::json!([{
                "targets": ["node1:9464"],
                "labels": {
                    "__param_pid": "12",
                    "container": "",
                    "exe": "/srv/bin/api",
                    "go_version": "go1.27.3",
                    "mode": "sampled",
                    "pid": "12",
                    "service_name": "api",
                }
            }])
        );
    }
}
