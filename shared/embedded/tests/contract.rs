//! The port contract suite against the embedded backend (SQLite + folder), each case on a fresh
//! data directory. Built without the standard harness (`harness = false`): every case of
//! [`outpost_testkit::contract::cases`] is one test, named as the case.

use outpost_embedded::EmbeddedOptions;
use outpost_testkit::contract::{ContractConfig, Fixture};
use std::process::ExitCode;

async fn embedded_backend(config: ContractConfig) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = EmbeddedOptions {
        max_receive_count: config.max_receive_count,
        ..EmbeddedOptions::default()
    };
    let backend = outpost_embedded::open(dir.path(), opts).expect("open embedded backend");
    Fixture::with_guard(backend, dir)
}

fn main() -> ExitCode {
    outpost_testkit::contract::main(embedded_backend, &[])
}
