//! The `sersync` binary: parse the command line, load the configuration, run.
//!
//! All logic lives in the library; this file only maps outcomes to exit codes
//! (`sersync::cli::EXIT_*`: 0 ok, 1 runtime error, 2 usage or configuration error).

use std::process::ExitCode;

use sersync::cli::{self, Command, EXIT_OK, EXIT_USAGE};

fn main() -> ExitCode {
    let command = match cli::parse_from(std::env::args_os().skip(1)) {
        Ok(command) => command,
        Err(err) => {
            eprintln!("sersync: {err}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let code = match command {
        Command::Help => {
            print!("{}", cli::HELP);
            EXIT_OK
        }
        Command::Version => {
            println!("sersync {}", env!("CARGO_PKG_VERSION"));
            EXIT_OK
        }
        Command::Check(cli) => cli::run_check(&cli),
        Command::Status(cli) => sersync::status::client::run(&cli),
        Command::Run(cli) => run(&cli),
    };
    ExitCode::from(code)
}

/// Run mode: a configuration with problems never starts (its problems go to the terminal,
/// before `-d` detaches). sersync 2.5 wrote `/proc/sys/fs/inotify/*` here; we never touch
/// system settings.
fn run(cli: &cli::Cli) -> u8 {
    match cli::load_config(cli) {
        Ok(config) => sersync::daemon::run(cli, config),
        Err(code) => code,
    }
}
