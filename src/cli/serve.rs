//! `authgate serve`: load the config, start the gateway, and run until SIGTERM or SIGINT,
//! reloading on SIGHUP and when the users file changes.

use std::process::ExitCode;

use super::common::{load_serving_config, ServeArgs, EXIT_RUNTIME, EXIT_USAGE};

pub fn serve(args: &ServeArgs) -> ExitCode {
    let (config, config_name) = match load_serving_config(args) {
        Ok(c) => (c.config, c.source_name),
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    crate::logging::init(&config.log);
    for warning in crate::secret_files::warnings(&config) {
        tracing::warn!("{warning}");
    }
    // This thread is worker 0; `server::start` adds a thread per further worker.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("authgate: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    runtime.block_on(async move {
        let running = match crate::server::start(config).await {
            Ok(r) => r,
            Err(e @ crate::server::StartError::Config(_)) => {
                eprint!("invalid configuration:\n{e}");
                return ExitCode::from(EXIT_USAGE);
            }
            Err(e) => {
                eprintln!("authgate: {e}");
                return ExitCode::from(EXIT_RUNTIME);
            }
        };
        for addr in &running.addrs {
            // Tests and scripts read this line to learn the port when listening on port 0.
            println!("authgate listening on {addr}");
        }
        if let Some(addr) = running.metrics_addr {
            println!("authgate metrics listening on {addr}");
        }
        running.log_started(&config_name);
        wait_for_stop_signal(args, &running).await;
        tracing::info!("stop signal received; readiness off, draining connections");
        running.shutdown().await;
        tracing::info!("authgate stopped");
        ExitCode::SUCCESS
    })
}

/// Runs until SIGTERM or SIGINT; every SIGHUP reloads the configuration meanwhile.
async fn wait_for_stop_signal(args: &ServeArgs, running: &crate::server::RunningGateway) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    let mut users_file = UsersFileWatch::new(running);
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => {
                tracing::info!("SIGHUP received; reloading the configuration");
                reload(args, running).await;
                users_file = UsersFileWatch::new(running);
            }
            _ = users_file.changed() => {
                tracing::info!(file = %users_file.path.display(), "the users file changed; reloading the configuration");
                reload(args, running).await;
                users_file = UsersFileWatch::new(running);
            }
        }
    }
}

/// Notices edits of the users file (`directory.local.watch`), so adding a user needs no SIGHUP.
/// It compares contents, not modification times, which miss two writes within one tick.
struct UsersFileWatch {
    path: std::path::PathBuf,
    every: std::time::Duration,
    seen: Option<Vec<u8>>,
}

impl UsersFileWatch {
    fn new(running: &crate::server::RunningGateway) -> Self {
        let gw = running.service().current();
        let (path, every) = match &gw.config.directory.local {
            Some(l) => (l.users_file.clone(), l.watch),
            None => (std::path::PathBuf::new(), std::time::Duration::ZERO),
        };
        let seen = std::fs::read(&path).ok();
        Self { path, every, seen }
    }

    /// Resolves when the file's contents differ from what the running configuration read;
    /// never when watching is off.
    async fn changed(&mut self) {
        if self.every.is_zero() {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(self.every).await;
            let now = std::fs::read(&self.path).ok();
            if now != self.seen {
                self.seen = now;
                return;
            }
        }
    }
}

/// Re-reads the config and the files it names. A config with problems changes nothing.
async fn reload(args: &ServeArgs, running: &crate::server::RunningGateway) {
    let config = match load_serving_config(args) {
        Ok(c) => c.config,
        Err(e) => {
            running.service().metrics.reload(false);
            let problems: Vec<String> = e.problems.iter().map(|p| p.to_string()).collect();
            tracing::error!(source = %e.source_name, problems = %problems.join("; "), "new configuration rejected; the running one stays");
            return;
        }
    };
    match running.reload(config).await {
        Ok(restart) => {
            for key in restart {
                tracing::warn!(
                    key,
                    "changed in the configuration, but only applies after a restart"
                );
            }
            tracing::info!("configuration reloaded");
        }
        Err(why) => {
            tracing::error!(problems = %why.to_string().trim(), "new configuration rejected; the running one stays")
        }
    }
}
