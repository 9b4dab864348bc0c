//! A `nestednet` command line with a family of this crate's own: `tiny-mlp` trains,
//! evaluates, exports, selects, searches and inspects like the built-in models.

fn main() -> anyhow::Result<()> {
    nestednet_cli::App::builtin().with_family::<user_crate::TinyMlpConfig>(user_crate::RECIPES).run()
}
