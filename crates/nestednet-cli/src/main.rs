//! `nestednet`: train, evaluate, export, inspect, select, search and nestify nested networks
//! of the built-in families (the command line itself is the `nestednet_cli` library, which a
//! crate with a family of its own builds its own binary from). The allocator comes with
//! `nestednet` (its `mimalloc` feature): counted, so that `select` can measure a level's peak
//! inference memory, and tuned for training loops.

fn main() -> anyhow::Result<()> {
    nestednet_cli::App::builtin().run()
}
