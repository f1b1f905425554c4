//! The process's allocator: jemalloc, with its background threads on.
//!
//! Measured with `cargo xtask bench mem` (10,000 idle sessions, then a flood): glibc's
//! malloc kept every page a burst of connections had touched (RSS stayed at its peak after
//! the connections closed), because freed chunks sit in per-thread arenas it only trims from
//! the top. jemalloc's background threads purge dirty pages a few seconds after they were
//! freed, so an administrator sees the memory come back once a flood is over. Declared in the
//! library, so the service binary, the tests and the benchmarks all run on the allocator
//! production uses.
//!
//! Freed pages go back within five seconds (`dirty_decay_ms:5000`, compiled in through
//! `JEMALLOC_SYS_WITH_MALLOC_CONF` in `.cargo/config.toml`), not jemalloc's ten. Measured with
//! the budget runner, three alternating rounds of five mixes (paced load and 2,000 idle TLS
//! sessions) each way: with ten, a mix sometimes started 25-35 MiB above the others (memory
//! the run before had freed and jemalloc still held, which the next run did not reuse) and 4
//! of 15 peaked over the 128 MiB target (at most 135 MiB); with five, all 15 peaked at 107-116
//! MiB, and the CPU was the same (median 19.7 % of a core against 19.0 %). Two seconds held
//! the peaks lower still, but 2 of its 5 mixes took over 25 % of a core.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
