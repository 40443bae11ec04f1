//! The `ltigate` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ltigate", version, about = "LTI 1.1 tool-provider gateway")]
struct Cli {
    /// Configuration file (default: config/ltigate.toml when it exists).
    #[arg(long, short, global = true, env = "LTIGATE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Validate the configuration and print it with secrets redacted.
    CheckConfig,
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("LTIGATE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,hyper=warn,h2=warn,redis=warn"));
    let json = std::env::var("LTIGATE_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn load(
    path: Option<&std::path::Path>,
) -> Result<(ltigate::config::RawConfig, ltigate::config::Settings), ExitCode> {
    ltigate::config::load(path).map_err(|e| {
        for line in &e.0 {
            eprintln!("config: {line}");
        }
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => match load(cli.config.as_deref()) {
            Ok((raw, _)) => {
                print!("{}", ltigate::config::render_redacted(&raw));
                eprintln!("configuration is valid");
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Serve => {
            init_logging();
            let settings = match load(cli.config.as_deref()) {
                Ok((_, s)) => s,
                Err(code) => return code,
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(serve(settings))
        }
    }
}

async fn serve(settings: ltigate::config::Settings) -> ExitCode {
    let running = match ltigate::start(settings).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    wait_for_signal().await;
    tracing::info!("shutting down: no new connections, finishing requests in flight");
    running.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
