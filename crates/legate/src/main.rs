//! `legate`: an Envoy-compatible proxy. Reads Envoy's command line and v3 bootstrap.

mod admin;
mod allocator;
mod cli;
mod demo;
mod logging;
mod memory;
mod server;
mod xds;

use clap::Parser;

#[global_allocator]
static ALLOCATOR: allocator::Allocator = allocator::Allocator;

fn main() {
    let _ = legate_proxy::worker::THREAD_HOOKS.set(legate_proxy::worker::ThreadHooks {
        started: allocator::worker_started,
        stopping: allocator::worker_stopping,
    });
    let options = cli::Options::parse();
    let code = match server::run(options) {
        Ok(code) => code,
        Err(error) => {
            // One line, the whole cause chain: what failed and why.
            eprintln!("error: {error:#}");
            1
        }
    };
    std::process::exit(code);
}
