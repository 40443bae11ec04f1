//! ltigate: an LTI 1.1 tool-provider gateway. A reverse-proxy sidecar that
//! verifies LMS launches, provisions learners upstream, and forwards every
//! request of a launched learner with trusted identity headers.
//!
//! This file wires the parts together; the logic lives in the modules.
//!
//! Public listener stack, outermost first:
//! 1. connection limits (`server.header_read_timeout`, `max_header_bytes`) —
//!    in [`server::serve`];
//! 2. load shedding (`server.max_connections` in flight, fast 503 beyond);
//! 3. routing of ltigate's own routes ([`gate::router`]);
//! 4. for everything else the session gate, CSRF guard, header policy and
//!    proxy ([`gate::proxy`]).

#![warn(missing_docs)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

pub mod admin;
pub mod config;
pub mod demo;
pub mod gate;
pub mod lti;
pub mod metrics;
pub mod outcomes;
pub mod provision;
pub mod secret;
pub mod server;
pub mod stall;
pub mod store;

use config::{Settings, StoreSettings};
use gate::session::{Lifetime, Sealer};
use gate::{respond, AppState};
use secret::Secret;

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

/// The session key: configured, or (embedded store only) generated once and
/// kept beside the database.
fn session_key(settings: &Settings) -> anyhow::Result<Secret> {
    if let Some(k) = &settings.session.secret {
        return Ok(k.clone());
    }
    let StoreSettings::Embedded { path } = &settings.store else {
        anyhow::bail!("session.secret: required with Redis");
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let key_path = dir.join("session.key");
    if let Ok(bytes) = std::fs::read(&key_path) {
        if bytes.len() >= config::MIN_SESSION_KEY {
            tracing::info!(path = %key_path.display(), "using the generated session key");
            return Ok(Secret::new(bytes));
        }
        anyhow::bail!(
            "{}: too short for a session key; delete it to generate a new one",
            key_path.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut key = vec![0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
    write_private(&key_path, &key)?;
    tracing::info!(
        path = %key_path.display(),
        "generated a session key (set session.secret_file to manage it yourself)"
    );
    Ok(Secret::new(key))
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Listen backlog: a burst of connections beyond what is being accepted
/// waits in the kernel queue (capped by `net.core.somaxconn`) instead of
/// waiting for SYN retransmits, so overload meets the fast 503s.
const LISTEN_BACKLOG: u32 = 4096;

fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Starts both listeners and the background tasks.
pub async fn start(settings: Settings) -> anyhow::Result<Running> {
    let settings = Arc::new(settings);
    let consumer_names: Vec<String> = settings.consumers.iter().map(|c| c.name.clone()).collect();
    let metrics = Arc::new(metrics::Metrics::new(&consumer_names));
    let key = session_key(&settings)?;
    let sealer = Sealer::new(&key, &settings.session.previous_secrets);
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
    for c in &settings.consumers {
        if let Ok(used) = store.licences_used(&c.name).await {
            metrics
                .licences_used
                .with_label_values(&[c.name.as_str()])
                .set(used as i64);
        }
    }
    if settings.webhook.secret.is_none() {
        tracing::warn!("webhook.secret is not set: completion webhooks are refused with 401");
    }
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
        sealer,
        metrics,
        provisioner,
        lifetime,
        outbox_notify: Arc::new(tokio::sync::Notify::new()),
    });
    let worker = Arc::new(outcomes::worker::Worker::new(
        app.clone(),
        app.outbox_notify.clone(),
    )?);
    let public = Arc::new(gate::router::Public {
        app: app.clone(),
        proxy: gate::proxy::Proxy::new(app.clone())?,
    });
    let admin = Arc::new(admin::Admin {
        app: app.clone(),
        ready: Default::default(),
    });

    let public_listener = bind(settings.server.listen)
        .with_context(|| format!("server.listen: cannot bind {}", settings.server.listen))?;
    let admin_listener = bind(settings.server.admin_listen).with_context(|| {
        format!(
            "server.admin_listen: cannot bind {}",
            settings.server.admin_listen
        )
    })?;
    let public_addr = public_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let conn = server::ConnSettings {
        header_read_timeout: settings.server.header_read_timeout,
        send_timeout: settings.server.send_timeout,
        max_header_bytes: settings.server.max_header_bytes,
        shutdown_grace: settings.server.shutdown_grace,
    };

    // Public stack: load shedding → routing (→ gate → proxy).
    let limit = Arc::new(Semaphore::new(settings.server.max_connections));
    let public_service = move |peer| {
        let public = public.clone();
        let limit = limit.clone();
        // Per client connection: the upstream connection it keeps.
        let client = public.proxy.connection(peer);
        move |req: http::Request<hyper::body::Incoming>| {
            let public = public.clone();
            let client = client.clone();
            let permit = limit.clone().try_acquire_owned();
            async move {
                let Ok(permit) = permit else {
                    let mut resp = respond::error(
                        http::StatusCode::SERVICE_UNAVAILABLE,
                        "overloaded",
                        "The service is busy. Please try again in a moment.",
                        respond::prefers_json(req.headers()),
                    );
                    resp.headers_mut().insert(
                        http::header::RETRY_AFTER,
                        http::HeaderValue::from_static("1"),
                    );
                    return resp;
                };
                // Released once the response body has been sent, so
                // streaming downloads count against server.max_connections
                // too.
                let resp = gate::router::route(&public, req, &client).await;
                server::hold_until_sent(resp, permit)
            }
        }
    };
    let admin_for_service = admin.clone();
    let admin_service = server::stateless(move |req| {
        let admin = admin_for_service.clone();
        async move { admin::handle(&admin, req).await }
    });

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
