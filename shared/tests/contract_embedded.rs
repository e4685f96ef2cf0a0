//! The port contract suite against the embedded backend (SQLite + folder), each case on a fresh
//! data directory.

use outpost_shared::contract::{ContractConfig, Fixture};
use outpost_shared::embedded::{self, EmbeddedOptions};

async fn embedded_backend(config: ContractConfig) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = EmbeddedOptions {
        max_receive_count: config.max_receive_count,
        ..EmbeddedOptions::default()
    };
    let backend = embedded::open(dir.path(), opts).expect("open embedded backend");
    Fixture::with_guard(backend, dir)
}

outpost_shared::contract_suite!(embedded_backend);
