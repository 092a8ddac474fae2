//! `legate`: an Envoy-compatible proxy. Reads Envoy's command line and v3 bootstrap.

mod admin;
mod cli;
mod demo;
mod logging;
mod memory;
mod server;
mod xds;

use clap::Parser;

fn main() {
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
