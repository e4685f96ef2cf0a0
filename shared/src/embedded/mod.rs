//! Embedded adapters: runs, queue, keys and workers in one SQLite file; artifacts in a folder.
