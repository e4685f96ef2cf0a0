//! The port contract suite against the embedded backend (SQLite + folder), each case on a fresh
//! data directory.

use outpost_embedded::EmbeddedOptions;
use outpost_testkit::contract::{ContractConfig, Fixture};

async fn embedded_backend(config: ContractConfig) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = EmbeddedOptions {
        max_receive_count: config.max_receive_count,
        ..EmbeddedOptions::default()
    };
    let backend = outpost_embedded::open(dir.path(), opts).expect("open embedded backend");
    Fixture::with_guard(backend, dir)
}

outpost_testkit::contract_suite!(embedded_backend);
