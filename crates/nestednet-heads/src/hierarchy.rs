//! Class hierarchies for coarse-to-fine classification: which coarse class each of a data
//! set's (fine) labels belongs to, at every depth.
//!
//! A hierarchy has `D` depths, coarsest first; the last depth is the data set's own labels.
//! It is data, read from a file and validated:
//!
//! - **JSON**: `{"depths": ["shape", "digit"], "classes": [{"name": "0", "path": ["loop"]}, …]}`,
//!   one entry per fine class in label order, `path` naming its ancestors coarsest first;
//! - **CSV**: a header `label,<depth 0>,…,<depth D-1>` and one row per fine class:
//!   `0,loop,0` (label index, then its class name at every depth, the fine name last).
//!
//! Validation: every fine label `0..n` appears exactly once, every row has one name per depth,
//! names are not empty, no name is used at two depths (a class cannot be its own ancestor), and
//! the groups form a tree (two fine classes that share a class at some depth share it at every
//! coarser depth). [`Hierarchy::check_classes`] compares the fine count with a data set's.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{HeadError, Result};

/// One depth of a hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HierarchyDepth {
    /// Name of the depth (`super-class`, `digit`).
    pub name: String,
    /// Class names at this depth, by class index.
    pub classes: Vec<String>,
    /// For every fine class (data-set label), its class index at this depth.
    pub of_fine: Vec<usize>,
}

/// A validated class hierarchy (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hierarchy {
    /// Depths, coarsest first; the last is the data set's labels.
    pub depths: Vec<HierarchyDepth>,
}

/// The JSON form of a hierarchy file.
#[derive(Debug, Deserialize)]
struct HierarchyFile {
    depths: Vec<String>,
    classes: Vec<FileClass>,
}

#[derive(Debug, Deserialize)]
struct FileClass {
    name: String,
    path: Vec<String>,
}

fn invalid(reason: impl Into<String>) -> HeadError {
    HeadError::Hierarchy(reason.into())
}

impl Hierarchy {
    /// Builds a hierarchy from depth names and, per fine class in label order, its class name
    /// at every depth (coarsest first, its own name last), and validates it.
    pub fn from_paths(depth_names: &[String], paths: &[Vec<String>]) -> Result<Self> {
        let num_depths = depth_names.len();
        if num_depths == 0 {
            return Err(invalid("a hierarchy needs at least one depth"));
        }
        if paths.is_empty() {
            return Err(invalid("a hierarchy needs at least one class"));
        }
        let mut depth_of_name: HashMap<&str, usize> = HashMap::new();
        let mut depths: Vec<HierarchyDepth> = depth_names
            .iter()
            .map(|n| HierarchyDepth { name: n.clone(), classes: Vec::new(), of_fine: Vec::new() })
            .collect();
        for (label, path) in paths.iter().enumerate() {
            if path.len() != num_depths {
                return Err(invalid(format!(
                    "fine class {label} names {} classes but the hierarchy has {num_depths} depths ({})",
                    path.len(),
                    depth_names.join(", ")
                )));
            }
            for (d, name) in path.iter().enumerate() {
                let name = name.trim();
                if name.is_empty() {
                    return Err(invalid(format!(
                        "fine class {label} has an empty name at depth `{}`",
                        depth_names[d]
                    )));
                }
                match depth_of_name.insert(name, d) {
                    Some(other) if other != d => {
                        return Err(invalid(format!(
                            "class `{name}` appears at depths `{}` and `{}`: a class cannot be its own ancestor",
                            depth_names[other], depth_names[d]
                        )));
                    }
                    _ => {}
                }
                let depth = &mut depths[d];
                let index = match depth.classes.iter().position(|c| c == name) {
                    Some(i) => i,
                    None => {
                        depth.classes.push(name.to_string());
                        depth.classes.len() - 1
                    }
                };
                depth.of_fine.push(index);
            }
        }
        let fine = &depths[num_depths - 1];
        if fine.classes.len() != paths.len() {
            return Err(invalid(format!(
                "{} fine classes share {} names: every fine class needs its own name",
                paths.len(),
                fine.classes.len()
            )));
        }
        let hierarchy = Self { depths };
        hierarchy.validate()?;
        Ok(hierarchy)
    }

    /// Checks the structure: indices in range, no empty class, the last depth is the identity,
    /// and the groups form a tree.
    pub fn validate(&self) -> Result<()> {
        let last = self.depths.last().ok_or_else(|| invalid("a hierarchy needs at least one depth"))?;
        let n = last.of_fine.len();
        if last.classes.len() != n || last.of_fine.iter().enumerate().any(|(i, &c)| i != c) {
            return Err(invalid("the last depth must be the fine classes themselves, in label order"));
        }
        for depth in &self.depths {
            if depth.of_fine.len() != n {
                return Err(invalid(format!(
                    "depth `{}` maps {} fine classes, expected {n}",
                    depth.name,
                    depth.of_fine.len()
                )));
            }
            let mut used = vec![false; depth.classes.len()];
            for &c in &depth.of_fine {
                *used.get_mut(c).ok_or_else(|| {
                    invalid(format!("depth `{}`: class index {c} out of range", depth.name))
                })? = true;
            }
            if let Some(c) = used.iter().position(|u| !u) {
                return Err(invalid(format!(
                    "depth `{}`: class `{}` has no fine class",
                    depth.name, depth.classes[c]
                )));
            }
        }
        // A tree: the class at depth d is a function of the class at depth d + 1.
        for d in 0..self.depths.len() - 1 {
            let (coarse, finer) = (&self.depths[d], &self.depths[d + 1]);
            let mut parent: Vec<Option<usize>> = vec![None; finer.classes.len()];
            for (f, (&c, &m)) in coarse.of_fine.iter().zip(&finer.of_fine).enumerate() {
                match parent[m] {
                    Some(p) if p != c => {
                        return Err(invalid(format!(
                            "class `{}` at depth `{}` has two parents at depth `{}` (`{}` and `{}`, seen at fine class {f})",
                            finer.classes[m], finer.name, coarse.name, coarse.classes[p], coarse.classes[c]
                        )));
                    }
                    _ => parent[m] = Some(c),
                }
            }
        }
        Ok(())
    }

    /// Reads a hierarchy file: `.json` or `.csv` (see the module documentation).
    pub fn load(path: &Path) -> Result<Self> {
        // Far above any real label tree (ImageNet's WordNet paths are a few MB as text).
        const MAX_BYTES: u64 = 64 << 20;
        let size = std::fs::metadata(path)
            .map_err(|e| invalid(format!("cannot read hierarchy file {}: {e}", path.display())))?
            .len();
        if size > MAX_BYTES {
            return Err(invalid(format!(
                "hierarchy file {} is {size} bytes; a hierarchy file may hold at most {MAX_BYTES}",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(format!("cannot read hierarchy file {}: {e}", path.display())))?;
        let named = |e: HeadError| match e {
            HeadError::Hierarchy(reason) => HeadError::Hierarchy(format!("{}: {reason}", path.display())),
            other => other,
        };
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Self::from_json(&text).map_err(named),
            Some("csv") => Self::from_csv(&text).map_err(named),
            _ => Err(invalid(format!("{}: a hierarchy file ends in .json or .csv", path.display()))),
        }
    }

    /// Parses the JSON form.
    pub fn from_json(text: &str) -> Result<Self> {
        let file: HierarchyFile =
            serde_json::from_str(text).map_err(|e| invalid(format!("invalid JSON: {e}")))?;
        let paths: Vec<Vec<String>> = file
            .classes
            .into_iter()
            .map(|c| c.path.into_iter().chain(std::iter::once(c.name)).collect())
            .collect();
        Self::from_paths(&file.depths, &paths)
    }

    /// Parses the CSV form.
    pub fn from_csv(text: &str) -> Result<Self> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
        let header: Vec<String> = lines
            .next()
            .ok_or_else(|| invalid("empty CSV"))?
            .split(',')
            .map(|s| s.trim().to_string())
            .collect();
        if header.len() < 2 || header[0] != "label" {
            return Err(invalid("the CSV header must be `label,<depth 0>,...,<finest depth>`"));
        }
        let depth_names = &header[1..];
        // One row per fine class: with N rows the labels are 0..N, so a label is checked
        // against the row count before it indexes anything (a huge label is an error, not a
        // huge allocation).
        let lines: Vec<&str> = lines.collect();
        let mut rows: Vec<Option<Vec<String>>> = vec![None; lines.len()];
        for (line_no, line) in lines.iter().enumerate() {
            let cells: Vec<String> = line.split(',').map(|s| s.trim().to_string()).collect();
            let label: usize = cells[0]
                .parse()
                .map_err(|_| invalid(format!("row {}: `{}` is not a label index", line_no + 2, cells[0])))?;
            if label >= rows.len() {
                return Err(invalid(format!(
                    "row {}: label {label} is out of range: the file maps {} fine classes, so labels run from 0 to {}",
                    line_no + 2,
                    rows.len(),
                    rows.len() - 1
                )));
            }
            if rows[label].is_some() {
                return Err(invalid(format!("fine class {label} is mapped twice")));
            }
            rows[label] = Some(cells[1..].to_vec());
        }
        let paths = rows
            .into_iter()
            .enumerate()
            .map(|(label, row)| row.ok_or_else(|| invalid(format!("fine class {label} is not mapped"))))
            .collect::<Result<Vec<_>>>()?;
        Self::from_paths(depth_names, &paths)
    }

    /// Number of depths.
    pub fn num_depths(&self) -> usize {
        self.depths.len()
    }

    /// Number of classes at `depth`.
    pub fn num_classes(&self, depth: usize) -> usize {
        self.depths[depth].classes.len()
    }

    /// Number of fine classes (the data set's labels).
    pub fn num_fine(&self) -> usize {
        self.depths[self.depths.len() - 1].classes.len()
    }

    /// Errors unless the hierarchy has exactly `num_classes` fine classes.
    pub fn check_classes(&self, num_classes: usize) -> Result<()> {
        if self.num_fine() == num_classes {
            Ok(())
        } else {
            Err(invalid(format!(
                "the hierarchy has {} fine classes but the data set has {num_classes}",
                self.num_fine()
            )))
        }
    }

    /// The classes at `depth` of fine labels `labels`.
    pub fn labels_at(&self, labels: &[usize], depth: usize) -> Vec<usize> {
        labels.iter().map(|&l| self.depths[depth].of_fine[l]).collect()
    }

    /// The class at `to` (coarser) of class `class` at depth `from`.
    pub fn lift(&self, class: usize, from: usize, to: usize) -> usize {
        assert!(to <= from, "lifting goes from a finer to a coarser depth");
        let fine = self.depths[from].of_fine.iter().position(|&c| c == class).expect("class exists");
        self.depths[to].of_fine[fine]
    }

    /// Hierarchy distance of two classes at `depth`: how many depths up their lowest common
    /// ancestor is (0 for the same class; `depth + 1` when they share no class at all, i.e. only
    /// the root).
    pub fn distance(&self, depth: usize, a: usize, b: usize) -> usize {
        (0..=depth)
            .rev()
            .find(|&d| self.lift(a, depth, d) == self.lift(b, depth, d))
            .map_or(depth + 1, |d| depth - d)
    }

    /// Digits grouped by shape, the built-in hierarchy of MNIST: `loop` (0, 6, 8, 9: a closed
    /// loop), `line` (1, 4, 7: straight strokes only) and `curve` (2, 3, 5: open curves).
    pub fn mnist_shapes() -> Self {
        let group = |d: usize| match d {
            0 | 6 | 8 | 9 => "loop",
            1 | 4 | 7 => "line",
            _ => "curve",
        };
        let paths: Vec<Vec<String>> = (0..10).map(|d| vec![group(d).to_string(), d.to_string()]).collect();
        Self::from_paths(&["shape".to_string(), "digit".to_string()], &paths)
            .expect("built-in hierarchy is valid")
    }

    /// CIFAR-100's 20 super-classes over its 100 classes, with their published names.
    pub fn cifar100() -> Self {
        let paths: Vec<Vec<String>> = CIFAR100_FINE
            .iter()
            .zip(CIFAR100_COARSE_OF_FINE)
            .map(|(fine, coarse)| vec![CIFAR100_COARSE[coarse].to_string(), fine.to_string()])
            .collect();
        Self::from_paths(&["super-class".to_string(), "class".to_string()], &paths)
            .expect("built-in hierarchy is valid")
    }

    /// CIFAR-100's hierarchy as its data files give it: read off the (coarse, fine) label pairs,
    /// with the published names when the pairs follow the published mapping (generated names
    /// otherwise).
    pub fn cifar100_from_labels(coarse: &[usize], fine: &[usize]) -> Result<Self> {
        let read = Self::from_label_pairs(coarse, fine, 100)?;
        let published = Self::cifar100();
        Ok(if read.depths[0].of_fine == published.depths[0].of_fine { published } else { read })
    }

    /// A two-depth hierarchy read off a data set's (coarse, fine) label pairs (CIFAR-100's files
    /// carry both), with generated names; errors if a fine class appears under two coarse ones.
    pub fn from_label_pairs(coarse: &[usize], fine: &[usize], num_fine: usize) -> Result<Self> {
        let mut parent: Vec<Option<usize>> = vec![None; num_fine];
        for (&c, &f) in coarse.iter().zip(fine) {
            let slot = parent.get_mut(f).ok_or_else(|| invalid(format!("fine label {f} out of range")))?;
            match *slot {
                Some(p) if p != c => {
                    return Err(invalid(format!("fine class {f} appears under coarse classes {p} and {c}")));
                }
                _ => *slot = Some(c),
            }
        }
        let paths = parent
            .iter()
            .enumerate()
            .map(|(f, p)| {
                p.map(|c| vec![format!("coarse-{c}"), format!("fine-{f}")])
                    .ok_or_else(|| invalid(format!("fine class {f} never appears")))
            })
            .collect::<Result<Vec<_>>>()?;
        Self::from_paths(&["coarse".to_string(), "fine".to_string()], &paths)
    }
}

/// CIFAR-100's fine class names, by label.
pub const CIFAR100_FINE: [&str; 100] = [
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
];

/// CIFAR-100's super-class names, by coarse label.
pub const CIFAR100_COARSE: [&str; 20] = [
    "aquatic_mammals",
    "fish",
    "flowers",
    "food_containers",
    "fruit_and_vegetables",
    "household_electrical_devices",
    "household_furniture",
    "insects",
    "large_carnivores",
    "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "non-insect_invertebrates",
    "people",
    "reptiles",
    "small_mammals",
    "trees",
    "vehicles_1",
    "vehicles_2",
];

/// CIFAR-100's coarse label of every fine label (as in the data files).
pub const CIFAR100_COARSE_OF_FINE: [usize; 100] = [
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0,
    11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13, 16, 19, 2, 4, 6, 19, 5, 5, 8, 19,
    18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_hierarchies_are_trees_of_the_right_size() {
        let mnist = Hierarchy::mnist_shapes();
        assert_eq!((mnist.num_depths(), mnist.num_classes(0), mnist.num_fine()), (2, 3, 10));
        assert_eq!(mnist.labels_at(&[0, 1, 2, 6], 0), vec![0, 1, 2, 0]);
        assert_eq!(mnist.depths[0].classes, vec!["loop", "line", "curve"]);
        let cifar = Hierarchy::cifar100();
        assert_eq!((cifar.num_classes(0), cifar.num_fine()), (20, 100));
        // Every super-class holds exactly 5 classes.
        for (c, name) in CIFAR100_COARSE.iter().enumerate() {
            assert_eq!(cifar.depths[0].of_fine.iter().filter(|&&x| x == c).count(), 5, "{name}");
        }
        assert_eq!(cifar.depths[0].classes[cifar.depths[0].of_fine[30]], "aquatic_mammals"); // dolphin
        assert!(cifar.check_classes(100).is_ok());
        let err = cifar.check_classes(10).unwrap_err().to_string();
        assert!(err.contains("100 fine classes but the data set has 10"), "{err}");
    }

    #[test]
    fn lifting_and_distances() {
        let h = Hierarchy::mnist_shapes();
        assert_eq!(h.lift(8, 1, 0), h.lift(0, 1, 0));
        assert_eq!(h.distance(1, 3, 3), 0);
        assert_eq!(h.distance(1, 0, 6), 1); // both loops
        assert_eq!(h.distance(1, 0, 1), 2); // loop vs line: only the root is shared
        assert_eq!(h.distance(0, 0, 1), 1);
    }

    #[test]
    fn files_parse_and_bad_files_are_named() {
        let json = r#"{"depths": ["kind", "animal"], "classes": [
            {"name": "cat", "path": ["mammal"]}, {"name": "trout", "path": ["fish"]}, {"name": "dog", "path": ["mammal"]}]}"#;
        let h = Hierarchy::from_json(json).unwrap();
        assert_eq!(h.labels_at(&[0, 1, 2], 0), vec![0, 1, 0]);
        let csv = "label,kind,animal\n1,fish,trout\n0,mammal,cat\n2,mammal,dog\n";
        assert_eq!(Hierarchy::from_csv(csv).unwrap(), h);
        let three = "label,a,b,c\n0,x,p,one\n1,x,q,two\n2,y,q,three\n";
        let err = Hierarchy::from_csv(three).unwrap_err().to_string();
        assert!(err.contains("class `q` at depth `b` has two parents"), "{err}");
        let err = Hierarchy::from_csv("label,k,f\n0,m,cat\n0,m,dog\n").unwrap_err().to_string();
        assert!(err.contains("fine class 0 is mapped twice"), "{err}");
        let err = Hierarchy::from_csv("label,k,f\n0,m,cat\n2,m,dog\n").unwrap_err().to_string();
        assert!(err.contains("label 2 is out of range"), "{err}");
        // The largest label a u64 holds panicked before ("index out of bounds").
        let err = Hierarchy::from_csv("label,k,f\n18446744073709551615,m,cat\n").unwrap_err().to_string();
        assert!(err.contains("row 2: label 18446744073709551615 is out of range"), "{err}");
        let err = Hierarchy::from_csv("label,k,f\n0,cat,cat\n").unwrap_err().to_string();
        assert!(err.contains("its own ancestor"), "{err}");
        let err = Hierarchy::from_csv("label,k,f\n0,m\n").unwrap_err().to_string();
        assert!(err.contains("names 1 classes but the hierarchy has 2 depths"), "{err}");
        let err = Hierarchy::from_csv("label,k,f\n0,m,cat\n1,m,cat\n").unwrap_err().to_string();
        assert!(err.contains("own name"), "{err}");
        assert!(Hierarchy::from_json("{").unwrap_err().to_string().contains("invalid JSON"));
        let err = Hierarchy::load(Path::new("/no/such/h.json")).unwrap_err().to_string();
        assert!(err.contains("/no/such/h.json"), "{err}");
    }

    #[test]
    fn label_pairs_from_the_data_files() {
        let h = Hierarchy::from_label_pairs(&[1, 0, 1], &[0, 1, 2], 3).unwrap();
        assert_eq!(h.labels_at(&[0, 1, 2], 0), vec![0, 1, 0]);
        let err = Hierarchy::from_label_pairs(&[1, 0], &[0, 0], 1).unwrap_err().to_string();
        assert!(err.contains("fine class 0 appears under coarse classes 1 and 0"), "{err}");
        let err = Hierarchy::from_label_pairs(&[0], &[0], 2).unwrap_err().to_string();
        assert!(err.contains("fine class 1 never appears"), "{err}");
        // The published table agrees with itself read as label pairs.
        let fine: Vec<usize> = (0..100).collect();
        let pairs = Hierarchy::from_label_pairs(&CIFAR100_COARSE_OF_FINE, &fine, 100).unwrap();
        assert_eq!(pairs.depths[0].of_fine.len(), 100);
        assert_eq!(pairs.num_classes(0), 20);
        let named = Hierarchy::cifar100_from_labels(&CIFAR100_COARSE_OF_FINE, &fine).unwrap();
        assert_eq!(named, Hierarchy::cifar100());
    }
}
