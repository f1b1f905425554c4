//! The process's allocator: jemalloc, with its background threads on.
//!
//! Measured with `cargo xtask bench mem` (10,000 idle sessions, then a flood): glibc's
//! malloc kept every page a burst of connections had touched (RSS stayed at its peak after
//! the connections closed), because freed chunks sit in per-thread arenas it only trims from
//! the top. jemalloc's background threads purge dirty pages about ten seconds after they were
//! freed, so an administrator sees the memory come back once a flood is over. Declared in the
//! library, so the service binary, the tests and the benchmarks all run on the allocator
//! production uses.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
