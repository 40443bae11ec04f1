//! Real Redis servers for integration tests: a standalone `redis-server` and
//! a three-node Redis Cluster, each on free loopback ports, with data and
//! logs in their own temporary directories.
//!
//! Everything here is synchronous (`std::process`), so it works from plain
//! and from tokio tests alike. Every process is killed when its handle is
//! dropped, also while a failing test unwinds.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

const SERVER_BIN: &str = "redis-server";
const CLI_BIN: &str = "redis-cli";

/// How long a freshly spawned server may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a new Cluster may take to reach `cluster_state:ok` everywhere.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts with a new port when the chosen one was taken meanwhile.
const PORT_ATTEMPTS: usize = 8;
/// Offset of the Cluster bus port from the client port.
const BUS_OFFSET: u16 = 10_000;

/// Why a spawned server did not come up.
enum StartFailure {
    /// Another process bound the port between our check and the server's
    /// bind: worth another try on another port.
    PortTaken,
    /// Anything else; carries a description with the log's tail.
    Other(String),
}

/// One `redis-server` process with its directory and log file.
struct Node {
    port: u16,
    args: Vec<String>,
    dir: TempDir,
    child: Option<Child>,
}

impl Node {
    /// Starts a node on a port from `pick_port`, trying other ports when the
    /// chosen one turns out to be taken.
    fn start(args: &[&str], pick_port: fn() -> u16) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("ltigate-redis-")
            .tempdir()
            .expect("cannot create a temporary directory for redis-server");
        let mut node = Node {
            port: 0,
            args: args.iter().map(|a| a.to_string()).collect(),
            dir,
            child: None,
        };
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            node.port = pick_port();
            match node.spawn() {
                Ok(()) => return node,
                Err(StartFailure::PortTaken) => {
                    last = format!("port {} was taken", node.port);
                }
                Err(StartFailure::Other(msg)) => panic!("{msg}"),
            }
        }
        panic!("redis-server did not start after {PORT_ATTEMPTS} attempts: {last}");
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Spawns the server on `self.port` and waits until it answers.
    fn spawn(&mut self) -> Result<(), StartFailure> {
        assert!(self.child.is_none(), "redis-server is already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("cannot create the redis-server log file");
        // Earlier runs (restarts, attempts on other ports) share the log;
        // only what this run writes decides why it failed.
        let log_start = log.metadata().map(|m| m.len() as usize).unwrap_or(0);
        let log_err = log.try_clone().expect("cannot clone the log file handle");
        let child = Command::new(SERVER_BIN)
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {SERVER_BIN} (is Redis installed?): {e}"));
        let pid = child.id();
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            // The answer must come from our process, not from another
            // server that took the port first.
            if server_pid(self.port) == Some(pid) {
                return Ok(());
            }
            let child = self.child.as_mut().expect("child was just spawned");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                let log = read_to_string(&self.log_path());
                let log = log.get(log_start..).unwrap_or(&log);
                if log.contains("Address already in use") {
                    return Err(StartFailure::PortTaken);
                }
                return Err(StartFailure::Other(format!(
                    "redis-server on port {} exited with {status}; log tail:\n{}",
                    self.port,
                    tail(log, 30)
                )));
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(StartFailure::Other(format!(
                    "redis-server on port {} did not answer within {START_TIMEOUT:?}; log tail:\n{}",
                    self.port,
                    tail(&read_to_string(&self.log_path()), 30)
                )));
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and reap; a no-op when not running.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, with the same arguments.
    fn restart(&mut self) {
        self.kill();
        match self.spawn() {
            Ok(()) => {}
            Err(StartFailure::PortTaken) => panic!(
                "cannot restart redis-server: port {} is taken by another process",
                self.port
            ),
            Err(StartFailure::Other(msg)) => panic!("{msg}"),
        }
    }

    /// Sends `signal` (e.g. `"STOP"`, `"CONT"`) to the running server.
    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("redis-server is not running");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill -{signal}: {e}"));
        assert!(status.success(), "kill -{signal} failed: {status}");
    }

    fn log_tail(&self, lines: usize) -> String {
        tail(&read_to_string(&self.log_path()), lines)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A standalone `redis-server` on a free loopback port. Nothing is
/// persisted: a restart starts empty.
pub struct RedisServer {
    node: Node,
}

impl RedisServer {
    /// Starts a server and waits until it answers; panics (with the log's
    /// tail) when it does not come up.
    pub fn start() -> RedisServer {
        RedisServer::start_with_args(&[])
    }

    /// Like [`RedisServer::start`], with extra `redis-server` arguments
    /// (e.g. `["--maxmemory-policy", "allkeys-lru"]`); they come after the
    /// defaults, so they override them. A restart uses them again.
    pub fn start_with_args(extra: &[&str]) -> RedisServer {
        RedisServer {
            node: Node::start(extra, ephemeral_port),
        }
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.node.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.node.port
    }

    /// Whether the process is currently running.
    pub fn is_running(&self) -> bool {
        self.node.child.is_some()
    }

    /// Kills the server with SIGKILL and waits for it: an outage.
    pub fn kill(&mut self) {
        self.node.kill();
    }

    /// Starts the server again on the same port (killing it first if it is
    /// still running). Its data is gone.
    pub fn restart(&mut self) {
        self.node.restart();
    }

    /// Freezes the server (SIGSTOP): it keeps its connections but answers
    /// nothing, like a hung host or a network partition.
    pub fn pause(&mut self) {
        self.node.signal("STOP");
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&mut self) {
        self.node.signal("CONT");
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.node.log_tail(lines)
    }
}

/// A three-node Redis Cluster (three primaries, no replicas) on free
/// loopback ports whose bus ports (`port + 10000`) are free too.
pub struct RedisCluster {
    nodes: Vec<Node>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers, joins them with
    /// `redis-cli --cluster create`, and waits until every node reports
    /// `cluster_state:ok`.
    pub fn start() -> RedisCluster {
        let args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
        ];
        let mut nodes: Vec<Node> = Vec::with_capacity(3);
        while nodes.len() < 3 {
            let node = Node::start(&args, cluster_port);
            // Two nodes of this cluster must not pick the same port either.
            if nodes.iter().any(|n| n.port == node.port) {
                continue;
            }
            nodes.push(node);
        }
        let cluster = RedisCluster { nodes };
        cluster.create();
        cluster.wait_ok();
        cluster
    }

    fn create(&self) {
        let out_path = self.nodes[0].dir.path().join("cluster-create.log");
        let out = File::create(&out_path).expect("cannot create the cluster-create log");
        let out_err = out.try_clone().expect("cannot clone the log file handle");
        let mut cmd = Command::new(CLI_BIN);
        cmd.args(["--cluster", "create"]);
        for n in &self.nodes {
            cmd.arg(format!("127.0.0.1:{}", n.port));
        }
        cmd.args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(out_err);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {CLI_BIN} (is Redis installed?): {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().expect("cannot wait for redis-cli") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "redis-cli --cluster create did not finish within 30 s:\n{}",
                    tail(&read_to_string(&out_path), 30)
                );
            }
            sleep(Duration::from_millis(50));
        };
        if !status.success() {
            panic!(
                "redis-cli --cluster create failed ({status}):\n{}",
                tail(&read_to_string(&out_path), 30)
            );
        }
    }

    /// Waits until every node reports `cluster_state:ok`; panics with each
    /// node's view and log after a bounded time.
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        let mut pending: Vec<u16> = self.ports();
        loop {
            pending.retain(|port| cluster_state(*port).as_deref() != Some("ok"));
            if pending.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                let mut report = String::new();
                for n in &self.nodes {
                    report.push_str(&format!(
                        "--- node {}: cluster_state {:?}; log tail:\n{}\n",
                        n.port,
                        cluster_state(n.port),
                        n.log_tail(15)
                    ));
                }
                panic!(
                    "the cluster did not reach cluster_state:ok within {CLUSTER_TIMEOUT:?} on ports {pending:?}\n{report}"
                );
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// `redis://127.0.0.1:PORT` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// The client port of every node.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Kills every node with SIGKILL and waits for them.
    pub fn kill_all(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
    }

    /// Starts every node again on its port (killing it first if it is
    /// running), then waits until the cluster is `ok`. Each node reads back
    /// its `nodes.conf`, so the cluster keeps its shape but loses its data.
    pub fn restart_all(&mut self) {
        for n in &mut self.nodes {
            n.restart();
        }
        self.wait_ok();
    }

    /// Kills node `i` (0–2) with SIGKILL and waits for it.
    pub fn kill_node(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again on its port. It reads back its `nodes.conf`
    /// (identity and slots) but no data. Call [`RedisCluster::wait_ok`] to
    /// wait until the cluster has taken it back.
    pub fn restart_node(&mut self, i: usize) {
        self.nodes[i].restart();
    }
}

/// A port the kernel just handed out for loopback, so free at that moment.
fn ephemeral_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("cannot bind a loopback port")
        .port()
}

/// A random port in 20000–29999 that is free together with its bus port.
fn cluster_port() -> u16 {
    loop {
        let port: u16 = rand::random_range(20_000..30_000);
        let free = |p: u16| TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok();
        if free(port) && free(port + BUS_OFFSET) {
            return port;
        }
    }
}

/// The `process_id` of the server answering on `port`, or `None` when
/// nothing answers yet.
fn server_pid(port: u16) -> Option<u32> {
    info_field(port, "INFO server", "process_id")?.parse().ok()
}

/// `cluster_state` as the node on `port` sees it (`None`: no answer).
fn cluster_state(port: u16) -> Option<String> {
    info_field(port, "CLUSTER INFO", "cluster_state")
}

/// Sends an inline command whose reply is `INFO`-style text over raw TCP
/// (every step bounded, so a frozen server cannot hang the caller) and
/// returns the value of `field`.
fn info_field(port: u16, command: &str, field: &str) -> Option<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    stream
        .set_write_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let needle = format!("{field}:");
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while reply.len() < 64 * 1024 {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        reply.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&reply);
        if let Some(rest) = text.split(needle.as_str()).nth(1) {
            if let Some((value, _)) = rest.split_once("\r\n") {
                return Some(value.trim().to_string());
            }
        }
    }
    None
}

fn read_to_string(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
