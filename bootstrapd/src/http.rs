//! One retrying HTTP client (being written).
