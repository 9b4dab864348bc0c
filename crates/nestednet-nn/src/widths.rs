/// Checks a nested layer's per-level widths: at least one level, no zero width, never
/// shrinking from one level to the next, never wider than the layer, and the last level using
/// the whole layer.
///
/// Panics with a message naming `what` (the layer kind and dimension) and the level: layer
/// constructors follow Burn's convention that invariant violations panic. User-facing input is
/// validated earlier, with errors, by `nestednet_schedule::ChannelSchedule`.
pub fn check_level_widths(what: &str, widths: &[usize], full: usize) {
    if let Some(problem) = level_widths_problem(what, widths, full) {
        panic!("{problem}");
    }
}

/// What is wrong with a nested layer's per-level widths (see [`check_level_widths`]), or
/// `None` when they are valid: the non-panicking form, for configs that report errors.
pub fn level_widths_problem(what: &str, widths: &[usize], full: usize) -> Option<String> {
    if widths.is_empty() {
        return Some(format!("{what}: at least one level is required"));
    }
    for (level, &w) in widths.iter().enumerate() {
        if w == 0 {
            return Some(format!("{what}: level {level} has 0 channels"));
        }
        if w > full {
            return Some(format!("{what}: level {level} uses {w} channels but the layer has {full}"));
        }
        if level > 0 && w < widths[level - 1] {
            return Some(format!(
                "{what}: level {level} ({w}) is narrower than level {} ({})",
                level - 1,
                widths[level - 1]
            ));
        }
    }
    let last = widths[widths.len() - 1];
    (last != full).then(|| format!("{what}: the full level must use all {full} channels, got {last}"))
}

/// Panics with a clear message if `level` is not one of `num_levels` levels.
pub(crate) fn assert_level(what: &str, level: usize, num_levels: usize) {
    assert!(level < num_levels, "{what}: level {level} does not exist (levels 0..={})", num_levels - 1);
}

/// For each channel of a layer with per-level `widths`, the lowest level that uses it.
pub(crate) fn channel_levels(widths: &[usize]) -> Vec<usize> {
    let full = widths.last().copied().unwrap_or(0);
    (0..full).map(|c| widths.iter().position(|&w| c < w).unwrap_or(widths.len())).collect()
}
