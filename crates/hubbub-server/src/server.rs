//! Starts Hubbub: opens the store, binds the public and admin listeners, serves HTTP (or HTTPS)
//! on them within their limits (`listener`), and shuts down gracefully on request.

use crate::backplane::Backplane;
use crate::config::Config;
use crate::keys::Keys;
use crate::listener::{self, Held, Limits, ListenerStats, Listeners, Slot, Track, Tracked};
use crate::state::{AppState, ClientSettings};
use crate::store::{Store, StoreError};
use crate::tls::{self, TlsError};
use crate::upstream::hub_settings::HubSettings;
use crate::upstream::Upstream;
use crate::{admin, api, ws};
use axum::extract::ConnectInfo;
use axum::Router;
use hubbub_proto::audience::PublicEndpoint;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// How long a TLS handshake may take before the connection is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr} for the {name} listener: {source}")]
    Bind {
        name: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Cluster(#[from] crate::backplane::nats::ClusterError),
    #[error("start-up was interrupted")]
    Interrupted,
    #[error("could not disable local auth: {0}")]
    LocalAuth(String),
}

/// A running instance: its bound addresses and the handle to stop it.
pub struct RunningServer {
    pub public_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub endpoints: Vec<PublicEndpoint>,
    pub admin_token_file: PathBuf,
    pub database: PathBuf,
    /// True when this start generated the keys (a new instance).
    pub first_start: bool,
    pub tls: bool,
    pub state: AppState,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("public_addr", &self.public_addr)
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

/// Opens the store, binds both listeners and starts serving. Returns once both listeners accept.
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
    let data_dir = config.data_dir.clone();
    let clock = config.clock.clone();
    let (store, instance) = tokio::task::spawn_blocking(move || {
        let store = Store::open(&data_dir)?;
        let instance = store.load_or_init(clock.now_millis())?;
        Ok::<_, StoreError>((store, instance))
    })
    .await
    .map_err(|_| StartError::Interrupted)??;
    let store = Arc::new(store);
    let admin_token_file = {
        let store = Arc::clone(&store);
        let token = instance.admin_token.clone();
        tokio::task::spawn_blocking(move || store.ensure_admin_token_file(&token))
            .await
            .map_err(|_| StartError::Interrupted)??
    };
    let keys = {
        let (store, clock) = (Arc::clone(&store), config.clock.clone());
        let instance = Arc::new(instance);
        let for_load = Arc::clone(&instance);
        let keys = tokio::task::spawn_blocking(move || Keys::load(store, &for_load, clock))
            .await
            .map_err(|_| StartError::Interrupted)??;
        (keys, instance)
    };
    let (keys, instance) = keys;
    let hub_settings = {
        let store = Arc::clone(&store);
        let declared = config.hubs.clone();
        let now = config.clock.now_millis();
        tokio::task::spawn_blocking(move || {
            let settings = HubSettings::load(store)?;
            for (hub, properties) in declared {
                settings.put(&hub, properties, now)?;
            }
            Ok::<_, StoreError>(settings)
        })
        .await
        .map_err(|_| StartError::Interrupted)??
    };

    let bind = |name: &'static str, addr: SocketAddr| async move {
        listen(addr).map_err(|source| StartError::Bind { name, addr, source })
    };
    let public = bind("public", config.listen).await?;
    let admin_listener = bind("admin", config.admin_listen).await?;
    let local = |l: &TcpListener, name: &'static str, addr: SocketAddr| {
        l.local_addr()
            .map_err(|source| StartError::Bind { name, addr, source })
    };
    let public_addr = local(&public, "public", config.listen)?;
    let admin_addr = local(&admin_listener, "admin", config.admin_listen)?;

    let endpoints = if config.public_endpoints.is_empty() {
        default_endpoints(public_addr, tls.is_some())
    } else {
        config.public_endpoints.clone()
    };
    let origin = endpoints
        .first()
        .map(|e| e.host().to_string())
        .unwrap_or_else(|| "localhost".into());
    let trace = crate::trace::Tracer::new(Arc::clone(keys.clock()));
    let telemetry = Arc::new(crate::telemetry::Telemetry::default());
    let upstream = Arc::new(
        Upstream::new(keys.clone(), origin, config.event_handler_timeout)
            .observed(trace.clone(), Arc::clone(&telemetry)),
    );
    // Cluster mode: join before serving, so a node that cannot reach NATS never serves.
    let shutdown = CancellationToken::new();
    let hubs = Arc::new(crate::dataplane::hub::Hubs::with_limits(config.hub_limits));
    let hub_settings = Arc::new(hub_settings);
    let memberships = ws::presence::follow(&hubs, Arc::clone(&hub_settings));
    let backplane = match &config.cluster {
        Some(cluster) => {
            let cluster = crate::backplane::nats::Cluster::join(
                cluster,
                &keys,
                &hubs,
                &hub_settings,
                shutdown.clone(),
            )
            .await?;
            // Hubs declared in the config file are the deployment's: the cluster gets them too.
            for (hub, properties) in &config.hubs {
                cluster
                    .put_hub_settings(
                        &hub_settings,
                        hub,
                        Some(properties.clone()),
                        config.clock.now_millis(),
                    )
                    .await?;
            }
            Backplane::Nats(cluster)
        }
        None => Backplane::Local,
    };
    backplane.follow_trace(&trace, shutdown.clone());
    let oidc = config.oidc.clone().map(|settings| {
        let oidc = Arc::new(crate::oidc::Oidc::new(settings));
        // Fetched at start without holding the start up: a token that comes first fetches.
        let fetching = Arc::clone(&oidc);
        tokio::spawn(async move { fetching.fetch_all().await });
        oidc
    });
    let state = AppState::new(crate::state::Shared {
        oidc,
        trace,
        telemetry,
        history: Arc::default(),
        hub_settings,
        upstream,
        keys,
        endpoints: endpoints.clone().into(),
        admin_token: Arc::new(crate::secret::AdminToken::new(instance.admin_token.clone())),
        token_leeway_secs: config.token_leeway_secs,
        hubs,
        client: ClientSettings {
            keep_alive: config.keep_alive,
            reconnect_grace: config.reconnect_grace,
        },
        sockets: TaskTracker::new(),
        shutdown,
        backplane,
        key_max_age_days: config.key_max_age_days,
        stale_key_window_days: config.stale_key_window_days,
        trusted_proxies: Arc::new(config.trusted_proxies.clone()),
        revocations: Arc::default(),
        sink_retries: Arc::default(),
        key_events: Arc::default(),
        notices_settled: Arc::default(),
        sink_rules: Arc::new(config.sink_rules.clone()),
        notifications: Arc::new(config.notifications.clone()),
        portal: Arc::default(),
        rate_sample: Arc::default(),
        listeners: Arc::new(Listeners::default()),
    });
    let shutdown = state.shutdown.clone();
    state.backplane.serve(Arc::new(state.clone()));

    let limits = |max_connections| Limits {
        max_connections,
        header_timeout: config.http_header_timeout,
        idle_timeout: config.http_idle_timeout,
    };
    if config.disable_local_auth && !state.keys.current().local_auth_disabled {
        // Before the first request: durable (and shared with the cluster) and audited.
        crate::keys::changes::apply(
            &state.keys,
            &state.backplane,
            crate::keys::changes::Change::SetLocalAuth { disabled: true },
            crate::keys::changes::Origin::config(),
        )
        .await
        .map_err(|e| StartError::LocalAuth(e.to_string()))?;
        tracing::info!("local auth disabled: access keys no longer authenticate");
    }
    let tasks = TaskTracker::new();
    tasks.spawn(serve(
        public,
        api::router(state.clone()).merge(ws::router(state.clone())),
        tls.clone(),
        shutdown.clone(),
        limits(config.max_connections),
        Arc::clone(&state.listeners.public),
    ));
    tasks.spawn(serve(
        admin_listener,
        admin::router(state.clone()),
        None,
        shutdown.clone(),
        limits(listener::ADMIN_MAX_CONNECTIONS),
        Arc::clone(&state.listeners.admin),
    ));
    tasks.spawn(crate::keys::lifecycle::run(
        state.clone(),
        config.maintenance_interval,
    ));
    tasks.spawn(state.clone().watch_revocations());
    tasks.spawn(ws::presence::run(state.clone(), memberships));
    tasks.spawn(state.clone().sample_history());
    tasks.close();

    Ok(RunningServer {
        public_addr,
        admin_addr,
        endpoints,
        admin_token_file,
        database: store.path().to_path_buf(),
        first_start: instance.created,
        tls: tls.is_some(),
        state,
        shutdown,
        tasks,
    })
}

/// Pending connections the kernel may queue before accepting (capped by `net.core.somaxconn`):
/// a burst of clients reconnecting at once must not overflow into SYN retries.
const ACCEPT_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// Without configured endpoints: `http(s)://localhost:<port>` (used in connection strings) and
/// `http(s)://127.0.0.1:<port>`, plus the listen address when it is a specific one.
fn default_endpoints(addr: SocketAddr, tls: bool) -> Vec<PublicEndpoint> {
    let scheme = if tls { "https" } else { "http" };
    let port = addr.port();
    let mut urls = vec![
        format!("{scheme}://localhost:{port}"),
        format!("{scheme}://127.0.0.1:{port}"),
    ];
    if !addr.ip().is_unspecified() && !addr.ip().is_loopback() {
        urls.push(format!("{scheme}://{addr}"));
    }
    urls.iter()
        .filter_map(|u| PublicEndpoint::parse(u).ok())
        .collect()
}

impl RunningServer {
    /// Asks the server to stop; returns at once.
    pub fn trigger_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Stops accepting, closes WebSocket clients with "going away", lets in-flight requests
    /// finish (bounded), and returns.
    pub async fn shutdown(self) {
        self.trigger_shutdown();
        self.wait().await;
    }

    /// Waits until the server has stopped (after [`trigger_shutdown`](Self::trigger_shutdown)).
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        ws::close_all(&self.state);
        self.state.sockets.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.state.sockets.wait())
            .await
            .is_err()
        {
            tracing::warn!("some WebSocket clients did not close within the shutdown grace period");
        }
        self.tasks.wait().await;
    }
}

/// Accepts connections until shutdown, serving each with HTTP/1.1 or HTTP/2 (and upgrades)
/// within the listener's limits.
async fn serve(
    tcp: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
    limits: Limits,
    stats: Arc<ListenerStats>,
) {
    let graceful = GracefulShutdown::new();
    // A full listener answers plain HTTP with a 503; TLS connections are just closed.
    let busy = tls.is_none().then(listener::busy_response);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = tcp.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = stats.admit(limits.max_connections) else {
            listener::refuse(stream, busy.as_deref());
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            app: app.clone(),
            peer,
            limits,
            stats: Arc::clone(&stats),
        };
        let watcher = graceful.watcher();
        match tls.clone() {
            None => {
                tokio::spawn(connection.serve(stream, slot, watcher));
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    let stream =
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                    connection.serve(stream, slot, watcher).await;
                });
            }
        }
    }
    drop(tcp);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within the shutdown grace period");
    }
}

/// One accepted connection and what serving it needs.
struct Connection {
    app: Router,
    peer: SocketAddr,
    limits: Limits,
    stats: Arc<ListenerStats>,
}

impl Connection {
    /// Serves HTTP on the stream until the client leaves, the connection is upgraded, or it
    /// overstays a limit.
    async fn serve<S>(self, stream: S, slot: Slot, watcher: Watcher)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            app,
            peer,
            limits,
            stats,
        } = self;
        let track = Track::new(slot);
        let requests = Arc::clone(&track);
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let in_flight = requests.begin(request.version());
            let response = app.clone().oneshot(request);
            async move {
                let response = response.await?;
                Ok::<_, Infallible>(response.map(|body| Held::new(body, in_flight)))
            }
        });
        let io = TokioIo::new(Tracked::new(stream, Arc::clone(&track)));
        let builder = auto::Builder::new(TokioExecutor::new());
        let conn = builder
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        listener::watch(watcher.watch(conn), &track, &limits, &stats).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_endpoints_follow_the_bound_port() {
        let urls: Vec<_> = default_endpoints("127.0.0.1:4321".parse().unwrap(), false)
            .iter()
            .map(PublicEndpoint::url)
            .collect();
        assert_eq!(urls, ["http://localhost:4321", "http://127.0.0.1:4321"]);
        let urls: Vec<_> = default_endpoints("10.1.2.3:443".parse().unwrap(), true)
            .iter()
            .map(PublicEndpoint::url)
            .collect();
        assert_eq!(
            urls,
            [
                "https://localhost:443",
                "https://127.0.0.1:443",
                "https://10.1.2.3:443"
            ]
        );
    }
}
