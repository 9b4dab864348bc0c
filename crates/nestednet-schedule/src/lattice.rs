//! Levels as a lattice of (width, depth) pairs: channel scheduling and layer scheduling
//! combined (paper, Sec. 3.3 and Fig. 4).

use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Result, ScheduleError};

/// One level of a width × depth lattice.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatticeLevel {
    /// Width ratio: the level uses `round(width · c)` leading channels of every split layer.
    pub width: f64,
    /// Blocks per residual stage the level runs (its first `depth` blocks of each stage).
    pub depth: usize,
    /// Index of `width` in [`LatticeSpec::widths`].
    pub width_index: usize,
    /// Index of `depth` in [`LatticeSpec::depths`].
    pub depth_index: usize,
}

impl LatticeLevel {
    /// The level's name, `w{width}-d{depth}` (e.g. `w0.25-d2`).
    pub fn name(&self) -> String {
        format!("w{}-d{}", self.width, self.depth)
    }

    /// Whether every weight this level uses is also used by `other` (narrower or equal, and
    /// shallower or equal).
    pub fn nests_in(&self, other: &LatticeLevel) -> bool {
        self.width_index <= other.width_index && self.depth_index <= other.depth_index
    }
}

/// Which (width, depth) pairs of a nested residual network are trained as levels.
///
/// With widths `0.25,1` and depths `2,5` on a WRN-32-4 (5 blocks per stage), every pair gives
/// the paper's lattice WRN-14-1 ⊂ {WRN-32-1, WRN-14-4} ⊂ WRN-32-4. The levels are numbered by
/// width, then depth (core first; the full pair, widest and deepest, is always last and
/// always trained), so a level is addressed by its number, its name (`w0.25-d2`) or its pair.
///
/// Textual form of `pairs` (CLI): `all`, or names `w0.25-d2,w1-d5`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatticeSpec {
    /// Width ratios, increasing, in `(0, 1]`, the last `1.0`.
    pub widths: Vec<f64>,
    /// Blocks per stage, increasing, at least 1; the last is the network's full depth.
    pub depths: Vec<usize>,
    /// The trained `[width index, depth index]` pairs; `None`: every pair.
    pub pairs: Option<Vec<[usize; 2]>>,
}

impl LatticeSpec {
    /// Every pair of `widths` × `depths`.
    pub fn grid(widths: Vec<f64>, depths: Vec<usize>) -> Self {
        Self { widths, depths, pairs: None }
    }

    /// Width levels only, every level at the full depth `blocks` (channel scheduling alone).
    pub fn widths_only(widths: Vec<f64>, blocks: usize) -> Self {
        Self { widths, depths: vec![blocks], pairs: None }
    }

    /// Checks the specification against a network with `blocks` blocks in its deepest stage.
    pub fn validate(&self, blocks: usize) -> Result<()> {
        let bad = |m: String| Err(ScheduleError::Lattice(m));
        if self.widths.is_empty() || self.depths.is_empty() {
            return bad("give at least one width and one depth".into());
        }
        for (i, &w) in self.widths.iter().enumerate() {
            if !(w > 0.0 && w <= 1.0) {
                return bad(format!("width {w} is outside (0, 1]"));
            }
            // Equal widths only make sense for a chain of levels that also differ by their
            // weight masks (one depth); on a grid they would repeat levels.
            let equal_ok = self.depths.len() == 1;
            if i > 0 && (w < self.widths[i - 1] || (w == self.widths[i - 1] && !equal_ok)) {
                return bad(format!("widths must increase: {w} follows {}", self.widths[i - 1]));
            }
        }
        if *self.widths.last().expect("non-empty") != 1.0 {
            return bad(format!(
                "the last width must be 1.0 (the full network), got {}",
                self.widths.last().unwrap()
            ));
        }
        for (i, &d) in self.depths.iter().enumerate() {
            if d == 0 {
                return bad("a depth (blocks per stage) must be at least 1".into());
            }
            if i > 0 && d <= self.depths[i - 1] {
                return bad(format!("depths must increase: {d} follows {}", self.depths[i - 1]));
            }
        }
        let deepest = *self.depths.last().expect("non-empty");
        if deepest != blocks {
            return bad(format!(
                "the last depth must be the network's {blocks} blocks per stage, got {deepest}"
            ));
        }
        if let Some(pairs) = &self.pairs {
            for (i, &[w, d]) in pairs.iter().enumerate() {
                if w >= self.widths.len() || d >= self.depths.len() {
                    return bad(format!(
                        "pair ({w}, {d}) does not exist: {} widths and {} depths",
                        self.widths.len(),
                        self.depths.len()
                    ));
                }
                if pairs[..i].contains(&[w, d]) {
                    return bad(format!("pair {} is listed twice", self.level_at(w, d).name()));
                }
            }
            let full = [self.widths.len() - 1, self.depths.len() - 1];
            if !pairs.contains(&full) {
                return bad(format!(
                    "the full level {} (widest and deepest) must be trained",
                    self.level_at(full[0], full[1]).name()
                ));
            }
        }
        Ok(())
    }

    fn level_at(&self, w: usize, d: usize) -> LatticeLevel {
        LatticeLevel { width: self.widths[w], depth: self.depths[d], width_index: w, depth_index: d }
    }

    /// The trained levels, ordered by width, then depth (the full level last). Call
    /// [`validate`](Self::validate) first.
    pub fn levels(&self) -> Vec<LatticeLevel> {
        let mut pairs: Vec<[usize; 2]> = match &self.pairs {
            Some(p) => p.clone(),
            None => {
                (0..self.widths.len()).flat_map(|w| (0..self.depths.len()).map(move |d| [w, d])).collect()
            }
        };
        pairs.sort_unstable();
        pairs.into_iter().map(|[w, d]| self.level_at(w, d)).collect()
    }

    /// Number of trained levels.
    pub fn num_levels(&self) -> usize {
        self.pairs.as_ref().map_or(self.widths.len() * self.depths.len(), Vec::len)
    }

    /// The number of the level called `key`: a level number (`3`), a name (`w0.25-d2`) or a
    /// pair (`0.25,2`: width, depth).
    pub fn find(&self, key: &str) -> Result<usize> {
        let levels = self.levels();
        let names: Vec<String> = levels.iter().map(LatticeLevel::name).collect();
        let key = key.trim();
        let found = if let Ok(index) = key.parse::<usize>() {
            crate::check_level(index, levels.len())?;
            Some(index)
        } else if let Some((w, d)) = key.split_once(',') {
            match (w.trim().parse::<f64>(), d.trim().parse::<usize>()) {
                (Ok(w), Ok(d)) => levels.iter().position(|l| l.width == w && l.depth == d),
                _ => None,
            }
        } else {
            names.iter().position(|n| n == key)
        };
        found.ok_or_else(|| {
            ScheduleError::Lattice(format!(
                "no level `{key}`: the levels are {} (by number 0..={}, name, or pair `width,depth`)",
                names.join(", "),
                levels.len() - 1
            ))
        })
    }

    /// Parses the trained pairs from names (`w0.25-d2,w1-d5`) or `all`.
    pub fn with_pairs_str(mut self, text: &str) -> Result<Self> {
        if text.trim() == "all" {
            self.pairs = None;
            return Ok(self);
        }
        let grid = Self { pairs: None, ..self.clone() };
        let all = grid.levels();
        let mut pairs = Vec::new();
        for name in text.split(',') {
            let index = grid.find(name)?;
            pairs.push([all[index].width_index, all[index].depth_index]);
        }
        self.pairs = Some(pairs);
        Ok(self)
    }
}

impl fmt::Display for LatticeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.levels().iter().map(LatticeLevel::name).collect();
        write!(f, "{}", names.join(","))
    }
}

/// Parses `widths;depths[;pairs]`, e.g. `0.25,1;2,5` or `0.25,1;2,5;w0.25-d2,w1-d5`.
impl FromStr for LatticeSpec {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Self> {
        let parts: Vec<&str> = text.split(';').collect();
        let bad =
            || ScheduleError::Lattice(format!("`{text}` is not `widths;depths[;pairs]` (e.g. `0.25,1;2,5`)"));
        if !(2..=3).contains(&parts.len()) {
            return Err(bad());
        }
        let widths =
            parts[0].split(',').map(|w| w.trim().parse::<f64>()).collect::<core::result::Result<Vec<_>, _>>();
        let depths = parts[1]
            .split(',')
            .map(|d| d.trim().parse::<usize>())
            .collect::<core::result::Result<Vec<_>, _>>();
        let spec = Self::grid(widths.map_err(|_| bad())?, depths.map_err(|_| bad())?);
        match parts.get(2) {
            Some(pairs) => spec.with_pairs_str(pairs),
            None => Ok(spec),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_papers_lattice() {
        // WRN-32-4 ⊃ {WRN-32-1, WRN-14-4} ⊃ WRN-14-1.
        let spec: LatticeSpec = "0.25,1;2,5".parse().unwrap();
        spec.validate(5).unwrap();
        let names: Vec<String> = spec.levels().iter().map(LatticeLevel::name).collect();
        assert_eq!(names, ["w0.25-d2", "w0.25-d5", "w1-d2", "w1-d5"]);
        let l = spec.levels();
        assert!(l[0].nests_in(&l[1]) && l[0].nests_in(&l[2]) && l[1].nests_in(&l[3]) && l[2].nests_in(&l[3]));
        assert!(!l[1].nests_in(&l[2]) && !l[2].nests_in(&l[1]));
        assert_eq!(spec.find("w1-d2").unwrap(), 2);
        assert_eq!(spec.find("0.25,5").unwrap(), 1);
        assert_eq!(spec.find("3").unwrap(), 3);
        let err = spec.find("w0.5-d2").unwrap_err().to_string();
        assert!(err.contains("no level `w0.5-d2`") && err.contains("w0.25-d2, w0.25-d5"), "{err}");
        assert!(spec.find("4").unwrap_err().to_string().contains("level 4 does not exist"));
    }

    #[test]
    fn chosen_pairs_and_errors() {
        let chain: LatticeSpec = "0.25,1;2,5;w1-d5,w0.25-d2".parse().unwrap();
        chain.validate(5).unwrap();
        assert_eq!(chain.num_levels(), 2);
        assert_eq!(chain.to_string(), "w0.25-d2,w1-d5");
        let err = |text: &str, blocks: usize| match text.parse::<LatticeSpec>() {
            Ok(spec) => spec.validate(blocks).unwrap_err().to_string(),
            Err(e) => e.to_string(),
        };
        assert!(err("0.25,1;2,5;w0.25-d2", 5).contains("full level w1-d5"));
        assert!(err("0.25,1;2,5;w0.25-d2,w0.25-d2,w1-d5", 5).contains("listed twice"));
        assert!(err("0.25,1;2,5;w0.3-d2", 5).contains("no level `w0.3-d2`"));
        assert!(err("1,0.25;2,5", 5).contains("widths must increase"));
        assert!(err("0.25,0.5;2,5", 5).contains("last width must be 1.0"));
        assert!(err("0.25,1;5,2", 5).contains("depths must increase"));
        assert!(err("0.25,1;0,5", 5).contains("at least 1"));
        assert!(err("0.25,1;2,5", 3).contains("network's 3 blocks"));
        assert!(err("0.25,1", 3).contains("widths;depths"));
        assert!(err("0,1;2,5", 5).contains("outside (0, 1]"));
    }
}
