//! ltigate: an LTI 1.1 tool-provider gateway. A reverse-proxy sidecar that
//! verifies LMS launches, provisions learners upstream, and forwards every
//! request of a launched learner with trusted identity headers.
//!
//! This file wires the parts together; the logic lives in the modules.
//!
//! The public listener's stack is composed in one place,
//! [`PublicLayers::stack`]; connection limits (`server.header_read_timeout`,
//! `max_header_bytes`, `send_timeout`) are the listener's, in
//! [`server::serve`].

#![warn(missing_docs)]

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context as _;
use std::convert::Infallible;

use futures_util::FutureExt as _;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::{Service, ServiceBuilder, ServiceExt as _};
use tracing::Instrument as _;

pub mod addr;
pub mod admin;
pub mod config;
pub mod demo;
pub mod export;
pub mod http;
pub mod launch;
pub mod lti;
pub mod metrics;
pub mod outbound;
pub mod outcomes;
pub mod provision;
pub mod proxy;
pub mod secret;
pub mod server;
pub mod session;
pub mod stall;
pub mod store;

use config::{Settings, StoreSettings};
use http::access_log::AccessLogLayer;
use http::request_id::RequestIdLayer;
use http::AppState;
use launch::routes::OwnRoutesLayer;
use proxy::{ClientConn, ProxyRequest};
use server::shed::ShedLayer;
use session::{Gate, Lifetime, Sealer};

/// The layers of the public listener, each built once at start-up.
struct PublicLayers {
    shed: ShedLayer,
    request_id: RequestIdLayer,
    access_log: Option<AccessLogLayer>,
    routes: OwnRoutesLayer,
    proxy: proxy::Proxy,
}

impl PublicLayers {
    /// The public stack for one client connection, outermost first. Every
    /// layer is always ready and never fails (`Infallible`): refusals are
    /// responses.
    fn stack(
        &self,
        client: Arc<ClientConn>,
    ) -> impl Service<
        ::http::Request<Incoming>,
        Response = ::http::Response<http::Body>,
        Error = Infallible,
        Future: Send,
    > + Clone
           + Send
           + 'static {
        ServiceBuilder::new()
            // Beyond server.max_connections in flight: a fast 503 before
            // any other work; a slot is held until the body is sent.
            .layer(self.shed.clone())
            // An id for every request (a trusted proxy's X-Request-Id, or
            // fresh): in the request's span, sent upstream, returned.
            .layer(self.request_id)
            // One line per request once its body is sent
            // (server.access_log); it reads the id set above.
            .option_layer(self.access_log)
            // launch, continue, logout, cartridge; the rest goes on.
            .layer(self.routes.clone())
            // The request with the client connection it came on (which
            // keeps its upstream connection).
            .map_request(move |req| ProxyRequest::new(req, client.clone()))
            // A valid session or a public path; else 401.
            .layer(self.proxy.session.clone())
            // No unsafe cross-site request rides on the cookie; else 403.
            .layer(self.proxy.csrf.clone())
            // Strip what a client may not send; set the forwarding and
            // identity headers from the session just checked.
            .layer(self.proxy.headers.clone())
            .service(self.proxy.forward.clone())
    }
}

/// The admin listener's stack: an id for every request (never taken from
/// the caller: the admin listener has no trusted proxy in front), on the
/// log lines of its handling (a completion webhook's among them), then the
/// admin routes.
fn admin_stack(
    admin: Arc<admin::Admin>,
) -> impl Service<
    ::http::Request<Incoming>,
    Response = ::http::Response<http::Body>,
    Error = Infallible,
    Future: Send,
> + Clone
       + Send
       + Sync
       + 'static {
    ServiceBuilder::new()
        .layer(RequestIdLayer::new(false))
        .service(tower::service_fn(move |req: ::http::Request<Incoming>| {
            let admin = admin.clone();
            let span = http::request_id::span(http::request_id::of(req.headers()));
            async move { Ok::<_, Infallible>(admin::handle(&admin, req).await) }.instrument(span)
        }))
}

/// A response of either stack.
type Answer = ::http::Response<http::Body>;
/// The future [`answering`] gives per request.
type Answering<S> = futures_util::future::Map<
    tower::util::Oneshot<S, ::http::Request<Incoming>>,
    fn(Result<Answer, Infallible>) -> Answer,
>;

/// What [`server::serve`] calls per request: a clone of `stack`, whose
/// answer is always a response (`Infallible` errors).
fn answering<S>(
    stack: S,
) -> impl Fn(::http::Request<Incoming>) -> Answering<S> + Clone + Send + Sync + 'static
where
    S: Service<::http::Request<Incoming>, Response = Answer, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
{
    fn unwrap(answer: Result<Answer, Infallible>) -> Answer {
        match answer {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }
    move |req| stack.clone().oneshot(req).map(unwrap as fn(_) -> _)
}

/// A running ltigate: its bound addresses and a way to stop it.
pub struct Running {
    /// Public listener address.
    pub public_addr: SocketAddr,
    /// Admin listener address.
    pub admin_addr: SocketAddr,
    /// Shared state (tests read metrics and the store through it).
    pub app: Arc<AppState>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish (within
    /// `server.shutdown_grace`), and flushes the store.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        if let Err(e) = self.app.store.flush().await {
            tracing::warn!(error = %e, "cannot flush the store on shutdown");
        }
    }
}

/// Starts both listeners and the background tasks.
pub async fn start(settings: Settings) -> anyhow::Result<Running> {
    let settings = Arc::new(settings);
    let tenant_names: Vec<String> = settings.tenants.iter().map(|t| t.name.clone()).collect();
    let metrics = Arc::new(metrics::Metrics::new(&tenant_names));
    metrics.register_platforms(
        settings
            .platforms
            .iter()
            .map(|p| (p.tenant.name.as_str(), p.name.as_str())),
    );
    let key = session::key::session_key(&settings)?;
    let sealer = Sealer::new(&key, &settings.session.previous_secrets);
    let store = open_store(&settings, &metrics).await?;
    let provisioner =
        provision::Provisioner::new(Arc::new(settings.upstream.clone()), metrics.clone())?;
    let lifetime = Lifetime {
        ttl: settings.session.ttl.as_secs(),
        idle_ttl: settings.session.idle_ttl.as_secs(),
        not_before: settings.session.not_before,
    };
    let app = Arc::new(AppState {
        settings: settings.clone(),
        store,
        metrics,
        provisioner,
        outbox_notify: Arc::new(tokio::sync::Notify::new()),
    });
    let assertion_keys = session::assertion::AssertionKeys::load(&settings)?.map(Arc::new);
    let assertion = assertion_keys
        .clone()
        .map(|keys| session::assertion::Assertions::new(&settings, keys).map(Arc::new))
        .transpose()?;
    let gate = Arc::new(Gate {
        app: app.clone(),
        sealer,
        lifetime,
        opened: session::OpenedCache::new(),
        assertion,
    });
    let tool_keys = Arc::new(launch::tool_key::ToolKeys::load(&settings)?);
    let worker = Arc::new(outcomes::worker::Worker::new(
        app.clone(),
        app.outbox_notify.clone(),
        tool_keys.signing().cloned(),
    )?);
    let lti13 = Arc::new(launch::v1p3::Lti13::new(&settings, tool_keys)?);
    let public = Arc::new(PublicLayers {
        shed: ShedLayer::new(settings.server.max_connections),
        request_id: RequestIdLayer::new(settings.server.trust_forwarded_headers),
        access_log: settings.server.access_log.then(AccessLogLayer::new),
        routes: OwnRoutesLayer::new(gate.clone(), lti13.clone()),
        proxy: proxy::Proxy::new(gate.clone())?,
    });
    let admin = Arc::new(admin::Admin {
        app: app.clone(),
        platform_keys: lti13.jwks.clone(),
        assertion_keys,
        ready: Default::default(),
    });

    let (public_listener, admin_listener) = bind_listeners(&settings)?;
    let public_addr = public_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let conn = server::ConnSettings {
        header_read_timeout: settings.server.header_read_timeout,
        send_timeout: settings.server.send_timeout,
        max_header_bytes: settings.server.max_header_bytes,
        shutdown_grace: settings.server.shutdown_grace,
    };

    let public_service = move |peer| {
        // Per client connection: the upstream connection it keeps.
        answering(public.stack(public.proxy.connection(peer)))
    };
    let admin_service = server::stateless(answering(admin_stack(admin.clone())));

    let tasks = vec![
        tokio::spawn(server::serve(
            public_listener,
            public_service,
            conn,
            shutdown_rx.clone(),
        )),
        tokio::spawn(server::serve(
            admin_listener,
            admin_service,
            conn,
            shutdown_rx.clone(),
        )),
        tokio::spawn(admin::store_probe(app.clone(), shutdown_rx.clone())),
        tokio::spawn(worker.run(shutdown_rx)),
    ];
    admin.ready.store(true, Ordering::Release);
    tracing::info!(
        public = %public_addr,
        admin = %admin_addr,
        public_url = %settings.server.public_url.url_for(""),
        store = app.store.backend(),
        "ltigate is serving"
    );
    Ok(Running {
        public_addr,
        admin_addr,
        app,
        shutdown: shutdown_tx,
        tasks,
    })
}

/// Opens the configured store, warns of Redis settings that lose data,
/// and reads what the metrics start from. A store that does not answer yet
/// is no reason not to start: launches get 503 until it does.
async fn open_store(
    settings: &Settings,
    metrics: &metrics::Metrics,
) -> anyhow::Result<store::SharedStore> {
    let store = store::open(&settings.store).await?;
    if let StoreSettings::Redis {
        urls,
        cluster,
        timeout,
    } = &settings.store
    {
        let probe = store::redis::RedisStore::new(urls, *cluster, *timeout)?;
        for w in probe.check_server_settings().await {
            tracing::warn!("{w}");
        }
    }
    match store.ping().await {
        Ok(()) => metrics.store_ok(),
        Err(e) => {
            metrics.store_failed("ping");
            tracing::warn!(error = %e, "the store is not answering; launches get 503 until it does");
        }
    }
    for t in &settings.tenants {
        if let Ok(used) = store.licences_used(&t.name).await {
            metrics
                .licences_used
                .with_label_values(&[t.name.as_str()])
                .set(used as i64);
        }
    }
    Ok(store)
}

/// The public and the admin listener, bound; an error names the key.
fn bind_listeners(settings: &Settings) -> anyhow::Result<(TcpListener, TcpListener)> {
    let public = server::bind(settings.server.listen)
        .with_context(|| format!("server.listen: cannot bind {}", settings.server.listen))?;
    let admin = server::bind(settings.server.admin_listen).with_context(|| {
        format!(
            "server.admin_listen: cannot bind {}",
            settings.server.admin_listen
        )
    })?;
    Ok((public, admin))
}
