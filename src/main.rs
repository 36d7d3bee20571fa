//! The `sip-capture` binary: reads the configuration and runs the pipeline.

use sip_capture::config::{self, Command, Config, DEFAULT_CONFIG_FILE};
use sip_capture::counters::Counters;
use sip_capture::envelope::AGENT;
use sip_capture::filter::blob::Endian;
use sip_capture::pipeline;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Exit code for a configuration error, as for every bad setting.
const EXIT_CONFIG: u8 = 2;
/// Exit code when the agent stops on a runtime error.
const EXIT_FAILURE: u8 = 1;
/// Exit code when a capture file was cut short or damaged: everything
/// before that point was used (published, or listed by filter-test).
const EXIT_FILE_CUT_SHORT: u8 = 3;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env = |key: &str| std::env::var_os(key).map(|v| v.to_string_lossy().into_owned());
    match config::from_sources(&args, env, Path::new(DEFAULT_CONFIG_FILE)) {
        Err(e) => {
            eprintln!("sip-capture: config: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Ok(Command::Help) => print(&config::help()),
        Ok(Command::Version) => print(&format!("{AGENT}\n")),
        Ok(Command::Check(config)) => {
            for warning in &config.warnings {
                eprintln!("sip-capture: config: {warning}");
            }
            let lines: String = config
                .effective
                .iter()
                .map(|(key, value)| format!("{key}={value}\n"))
                .collect();
            print(&lines)
        }
        Ok(Command::Run(config)) => run(config),
        Ok(Command::CompileFilter {
            expression,
            output,
            endian,
            max_dfa_bytes,
        }) => compile_filter(&expression, &output, endian, max_dfa_bytes),
        Ok(Command::FilterTest { filter, file }) => {
            // Warnings (a file cut short, a link type not decoded) on stderr;
            // stdout is the listing.
            env_logger::Builder::new()
                .filter_level(log::LevelFilter::Warn)
                .init();
            match pipeline::filter_test(&filter, &file, &mut std::io::stdout().lock()) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(EXIT_FILE_CUT_SHORT),
                Err(e) => {
                    eprintln!("sip-capture: {}", e.0);
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
    }
}

/// Write `text` to standard output. A reader that stops early (`| head`)
/// is not an error: what it read is all it wanted.
fn print(text: &str) -> ExitCode {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    ExitCode::SUCCESS
}

/// The process's peak resident memory (VmHWM), from /proc.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(feature = "filter-compiler")]
fn compile_filter(expression: &str, output: &Path, endian: Endian, max_dfa_bytes: usize) -> ExitCode {
    let blob = match sip_capture::filter::compile_blob(expression, max_dfa_bytes, endian) {
        Ok(blob) => blob,
        Err(e) => {
            eprintln!("sip-capture: config: SIP_FILTER={expression:?}: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match std::fs::write(output, &blob) {
        Ok(()) => {
            println!(
                "wrote {} ({} bytes, {})",
                output.display(),
                blob.len(),
                endian.name()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sip-capture: cannot write {}: {e}", output.display());
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

#[cfg(not(feature = "filter-compiler"))]
fn compile_filter(_: &str, _: &Path, _: Endian, _: usize) -> ExitCode {
    eprintln!(
        "sip-capture: this build has no regex compiler (feature filter-compiler); run compile-filter on a host build"
    );
    ExitCode::from(EXIT_CONFIG)
}

fn run(config: Config) -> ExitCode {
    env_logger::Builder::new()
        .filter_level(config.log_level)
        .target(env_logger::Target::Stdout)
        .init();
    for warning in &config.warnings {
        log::warn!("config: {warning}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            log::error!("cannot handle signal {signal}: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    }
    match pipeline::run(config, stop) {
        Ok(counters) => {
            let rss = peak_rss_kib()
                .map(|kib| format!(" peak_rss_kib={kib}"))
                .unwrap_or_default();
            log::info!("summary: {counters}{rss}");
            if Counters::get(&counters.file_cut_short) > 0 {
                ExitCode::from(EXIT_FILE_CUT_SHORT)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            log::error!("{}", e.0);
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
