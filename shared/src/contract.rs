//! Port contract suite (written by the storage work).
