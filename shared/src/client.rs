//! Typed REST client of the Outpost API.
