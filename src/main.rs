//! The `ltigate` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "ltigate", version, about = "LTI 1.1 tool-provider gateway")]
struct Cli {
    #[command(flatten)]
    config: ConfigArg,
    #[command(subcommand)]
    command: Option<Command>,
}

/// `--config`, offered by the subcommands that read the configuration (not
/// by `demo`, which runs on its own).
#[derive(Args)]
struct ConfigArg {
    /// Configuration file (default: config/ltigate.toml when it exists).
    #[arg(long, short, env = "LTIGATE_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Serve(ConfigArg),
    /// Validate the configuration and print it with secrets redacted.
    CheckConfig(ConfigArg),
    /// Print what an LMS admin needs: for LTI 1.1 (--consumer) a course's
    /// launch URLs, key, cartridge URL and XML; for LTI 1.3 (--lti13,
    /// --platform) the tool's URLs, each LMS's registration form and the
    /// values to bring back into [[platforms]].
    Export(ExportArgs),
    /// Inspect and re-queue grade deliveries (through the running server's
    /// admin listener, which holds the store).
    Outbox(OutboxArgs),
    /// Run ltigate with a demo platform and a demo LMS on this machine, and
    /// print the URL to open. Runs on its own configuration (see
    /// --print-config), never a configuration file.
    Demo(DemoArgs),
}

#[derive(Args)]
#[command(group(
    clap::ArgGroup::new("what")
        .required(true)
        .multiple(true)
        .args(["consumer", "lti13", "platform"])
))]
struct ExportArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// LTI 1.1: the consumer's `name` (needs --course).
    #[arg(long, requires = "course", conflicts_with_all = ["lti13", "platform"])]
    consumer: Option<String>,
    /// LTI 1.3: what a platform admin registers; needs no [[platforms]] entry.
    #[arg(long)]
    lti13: bool,
    /// LTI 1.3, adding the values of this [[platforms]] registration.
    #[arg(long)]
    platform: Option<String>,
    /// LTI 1.3: the LMS whose registration form to fill in.
    #[arg(long, value_enum, conflicts_with = "consumer")]
    lms: Option<LmsArg>,
    /// The course's external ID (LTI 1.3: optional; put in the target link URI).
    #[arg(long)]
    course: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Include the consumer's (newest) shared secret.
    #[arg(long, requires = "consumer")]
    show_secret: bool,
}

/// `--lms`.
#[derive(Clone, Copy, ValueEnum)]
enum LmsArg {
    Canvas,
    Moodle,
    Brightspace,
    Blackboard,
    Sakai,
}

impl From<LmsArg> for ltigate::export::Lms {
    fn from(l: LmsArg) -> Self {
        use ltigate::export::Lms;
        match l {
            LmsArg::Canvas => Lms::Canvas,
            LmsArg::Moodle => Lms::Moodle,
            LmsArg::Brightspace => Lms::Brightspace,
            LmsArg::Blackboard => Lms::Blackboard,
            LmsArg::Sakai => Lms::Sakai,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Labelled lines and the XML, for people.
    Text,
    /// One JSON object, for scripts.
    Json,
}

#[derive(Args)]
struct OutboxArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Base URL of the running server's admin listener (default: from
    /// `server.admin_listen` in the configuration).
    #[arg(long)]
    admin: Option<String>,
    #[command(subcommand)]
    action: OutboxAction,
}

#[derive(Subcommand)]
enum OutboxAction {
    /// List pending, waiting and dead grade jobs.
    List {
        /// Print the admin listener's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-queue a dead letter by its id, or every dead letter.
    Retry {
        /// The job id shown by `outbox list`.
        #[arg(required_unless_present = "all_dead")]
        id: Option<String>,
        /// Re-queue every dead letter.
        #[arg(long, conflicts_with = "id")]
        all_dead: bool,
    },
}

#[derive(Args)]
struct DemoArgs {
    /// First of four loopback ports: the demo LMS, ltigate, its admin
    /// listener and the demo platform (0: free ports). Default: LMS 8000,
    /// ltigate 8080, admin 9090, platform 3000.
    #[arg(long)]
    port_base: Option<u16>,
    /// Where ltigate keeps its embedded store; delete it to start over.
    #[arg(long, default_value = "data/demo")]
    data_dir: PathBuf,
    /// Print the demo's ltigate configuration and exit (for `export --config`).
    #[arg(long)]
    print_config: bool,
}

fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("LTIGATE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,hyper=warn,h2=warn,redis=warn"));
    let json = std::env::var("LTIGATE_LOG_FORMAT").is_ok_and(|v| v == "json");
    // Colour only for a person at a terminal: logs piped to a file or a
    // collector stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn load(
    path: Option<&Path>,
) -> Result<(ltigate::config::RawConfig, ltigate::config::Settings), ExitCode> {
    ltigate::config::load(path).map_err(|e| {
        for line in &e.0 {
            eprintln!("config: {line}");
        }
        ExitCode::from(2)
    })
}

/// The tokio runtime: one worker thread per CPU this process may use (its
/// affinity mask and cgroup CPU quota count). With a single CPU, the
/// current-thread scheduler: the same single worker without the
/// work-stealing machinery, which only costs there.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let mut builder = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().build().map_err(|e| {
        eprintln!("cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `ltigate --config X check-config` and `ltigate check-config --config X`
    // both work; the subcommand's wins.
    let top = cli.config.config;
    let pick = |sub: &ConfigArg| sub.config.clone().or_else(|| top.clone());
    match cli.command {
        None => serve(top.as_deref()),
        Some(Command::Serve(c)) => serve(pick(&c).as_deref()),
        Some(Command::CheckConfig(c)) => check_config(pick(&c).as_deref()),
        Some(Command::Export(args)) => export(pick(&args.config).as_deref(), &args),
        Some(Command::Outbox(args)) => outbox(pick(&args.config).as_deref(), &args),
        Some(Command::Demo(args)) => demo(&args),
    }
}

fn outbox(config: Option<&Path>, args: &OutboxArgs) -> ExitCode {
    let base = match &args.admin {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => match load(config) {
            Ok((_, s)) => ltigate::admin::client::base_url(s.server.admin_listen),
            Err(code) => return code,
        },
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = rt.block_on(async {
        match &args.action {
            OutboxAction::List { json } => ltigate::admin::client::list(&base, *json).await,
            OutboxAction::Retry { id, all_dead } => {
                let id = if *all_dead { None } else { id.as_deref() };
                ltigate::admin::client::retry(&base, id).await
            }
        }
    });
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("outbox: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(config: Option<&Path>) -> ExitCode {
    match load(config) {
        Ok((raw, settings)) => {
            print!("{}", ltigate::config::render_redacted(&raw));
            for w in settings.warnings() {
                eprintln!("config: warning: {w}");
            }
            eprintln!("configuration is valid");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn serve(config: Option<&Path>) -> ExitCode {
    init_logging();
    let settings = match load(config) {
        Ok((_, s)) => s,
        Err(code) => return code,
    };
    for w in settings.warnings() {
        tracing::warn!("config: {w}");
    }
    match runtime() {
        Ok(rt) => rt.block_on(run_until_signal(settings)),
        Err(code) => code,
    }
}

async fn run_until_signal(settings: ltigate::config::Settings) -> ExitCode {
    // Registered before the listeners open: a SIGTERM that arrives as soon
    // as ltigate says it is serving must start a graceful shutdown, not
    // take the default action and drop the connections.
    let signals = Signals::install();
    let running = match ltigate::start(settings).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    signals.wait().await;
    tracing::info!("shutting down: no new connections, finishing requests in flight");
    running.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

fn export(config: Option<&Path>, args: &ExportArgs) -> ExitCode {
    let settings = match load(config) {
        Ok((_, s)) => s,
        Err(code) => return code,
    };
    let (Some(consumer), Some(course)) = (&args.consumer, &args.course) else {
        return export_lti13(&settings, args);
    };
    let link = match ltigate::launch::cartridge::CourseLink::new(
        &settings,
        consumer,
        course,
        args.show_secret,
    ) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("export: {e}");
            return ExitCode::from(2);
        }
    };
    match args.format {
        Format::Text => print!("{}", link.to_text()),
        Format::Json => println!("{}", link.to_json()),
    }
    ExitCode::SUCCESS
}

/// `export --lti13` / `export --platform NAME`.
fn export_lti13(settings: &ltigate::config::Settings, args: &ExportArgs) -> ExitCode {
    let export = match ltigate::export::Lti13Export::new(
        settings,
        args.lms.map(Into::into),
        args.course.as_deref(),
        args.platform.as_deref(),
    ) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("export: {e}");
            return ExitCode::from(2);
        }
    };
    match args.format {
        Format::Text => print!("{}", export.to_text()),
        Format::Json => println!("{}", export.to_json()),
    }
    ExitCode::SUCCESS
}

fn demo(args: &DemoArgs) -> ExitCode {
    use ltigate::demo::{Options, Ports};
    let ports = match args.port_base.map(Ports::from_base).transpose() {
        Ok(p) => p.unwrap_or(Ports::DEFAULT),
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        if ports.gate == 0 {
            eprintln!("demo: --print-config needs fixed ports (a --port-base other than 0)");
            return ExitCode::from(2);
        }
        print!("{}", ltigate::demo::config_toml(&ports, &args.data_dir));
        return ExitCode::SUCCESS;
    }
    init_logging();
    let opts = Options {
        ports,
        data_dir: args.data_dir.clone(),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let signals = Signals::install();
        let demo = match ltigate::demo::start(&opts).await {
            Ok(d) => d,
            Err(e) => {
                eprintln!("demo: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        println!("\n{}", demo.banner());
        signals.wait().await;
        tracing::info!("stopping the demo");
        demo.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// SIGTERM and SIGINT (Ctrl-C), listened for from the moment they are
/// installed.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let listen = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!("cannot listen for {name}: {e}");
                    None
                }
            };
            Self {
                term: listen(SignalKind::terminate(), "SIGTERM"),
                int: listen(SignalKind::interrupt(), "SIGINT"),
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    async fn wait(self) {
        #[cfg(unix)]
        {
            async fn recv(s: Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = recv(self.term) => {}
                _ = recv(self.int) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
