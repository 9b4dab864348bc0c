use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Result, ScheduleError};

/// Explicit channel counts of one layer, one count per level (core first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerChannels {
    /// Name of the scheduled layer (as the model reports it, e.g. `conv1`).
    pub layer: String,
    /// Channels used by each level, from the core (level 0) to the full level.
    pub widths: Vec<usize>,
}

/// What the user says about the levels of a nested network.
///
/// Turn it into per-layer widths with [`ChannelSchedule::new`](crate::ChannelSchedule::new),
/// which validates it against the model's layers.
///
/// Textual form (for the CLI and configs), see [`LevelSpec::from_str`]:
/// - ratios: `0.25,0.5,1.0`;
/// - explicit counts: `conv1=8,16,32;conv2=16,32,64;fc1=32,64,128`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LevelSpec {
    /// One width ratio per level, applied to every scheduled layer: level `k` of a layer with
    /// `c` channels uses `round(ratio_k · c)` leading channels. Ratios must not decrease, lie
    /// in `(0, 1]`, and the last must be `1.0` (the full network). Equal ratios are only
    /// accepted by models whose levels also differ by their weight masks.
    Ratios(Vec<f64>),
    /// Explicit channel counts for every scheduled layer.
    Channels(Vec<LayerChannels>),
}

impl LevelSpec {
    /// The paper's adaptive-compression setting used by `mnist-cnn`: `0.25, 0.5, 1.0`.
    pub fn default_ratios() -> Self {
        Self::Ratios(vec![0.25, 0.5, 1.0])
    }

    /// Number of levels the specification describes (before validation).
    pub fn num_levels(&self) -> usize {
        match self {
            Self::Ratios(r) => r.len(),
            Self::Channels(layers) => layers.first().map_or(0, |l| l.widths.len()),
        }
    }

    /// Checks the parts of the specification that do not depend on the model: at least one
    /// level; ratios in `(0, 1]`, never decreasing, ending at `1.0`; explicit counts with
    /// the same number of levels for every layer and no layer listed twice.
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Ratios(ratios) => {
                if ratios.is_empty() {
                    return Err(ScheduleError::Empty);
                }
                for (level, &ratio) in ratios.iter().enumerate() {
                    // `!(ratio > 0.0)` also rejects NaN.
                    if !(ratio > 0.0 && ratio <= 1.0) {
                        return Err(ScheduleError::RatioOutOfRange { level, ratio });
                    }
                    if level > 0 && ratio < ratios[level - 1] {
                        return Err(ScheduleError::RatiosNotIncreasing {
                            level,
                            ratio,
                            previous: ratios[level - 1],
                        });
                    }
                }
                let last = ratios.len() - 1;
                if ratios[last] != 1.0 {
                    return Err(ScheduleError::LastRatioNotFull { level: last, ratio: ratios[last] });
                }
                Ok(())
            }
            Self::Channels(layers) => {
                let Some(first) = layers.first() else {
                    return Err(ScheduleError::Empty);
                };
                let expected = first.widths.len();
                if expected == 0 {
                    return Err(ScheduleError::Empty);
                }
                for (i, layer) in layers.iter().enumerate() {
                    if layers[..i].iter().any(|l| l.layer == layer.layer) {
                        return Err(ScheduleError::DuplicateLayer { layer: layer.layer.clone() });
                    }
                    if layer.widths.len() != expected {
                        return Err(ScheduleError::LevelCountMismatch {
                            layer: layer.layer.clone(),
                            expected,
                            found: layer.widths.len(),
                        });
                    }
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for LevelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |v: Vec<String>| v.join(",");
        match self {
            Self::Ratios(r) => write!(f, "{}", join(r.iter().map(|x| x.to_string()).collect())),
            Self::Channels(layers) => {
                let parts: Vec<String> = layers
                    .iter()
                    .map(|l| {
                        let widths = join(l.widths.iter().map(|w| w.to_string()).collect());
                        format!("{}={widths}", l.layer)
                    })
                    .collect();
                write!(f, "{}", parts.join(";"))
            }
        }
    }
}

impl FromStr for LevelSpec {
    type Err = ScheduleError;

    /// Parses `0.25,0.5,1.0` (ratios) or `conv1=8,16,32;fc1=32,64,128` (explicit counts), then
    /// runs [`LevelSpec::validate`].
    fn from_str(input: &str) -> Result<Self> {
        let parse_err = |reason: String| ScheduleError::Parse { input: input.to_string(), reason };
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(ScheduleError::Empty);
        }
        let spec = if trimmed.contains('=') {
            let mut layers = Vec::new();
            for part in trimmed.split(';').map(str::trim).filter(|p| !p.is_empty()) {
                let (name, widths) = part
                    .split_once('=')
                    .ok_or_else(|| parse_err(format!("`{part}` is not `layer=w0,w1,...`")))?;
                let widths = widths
                    .split(',')
                    .map(|w| {
                        w.trim().parse::<usize>().map_err(|_| {
                            parse_err(format!(
                                "`{}` in layer `{}` is not a channel count",
                                w.trim(),
                                name.trim()
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                layers.push(LayerChannels { layer: name.trim().to_string(), widths });
            }
            Self::Channels(layers)
        } else {
            let ratios = trimmed
                .split(',')
                .map(|r| {
                    r.trim().parse::<f64>().map_err(|_| parse_err(format!("`{}` is not a number", r.trim())))
                })
                .collect::<Result<Vec<_>>>()?;
            Self::Ratios(ratios)
        };
        spec.validate()?;
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ratios_and_round_trips() {
        let spec: LevelSpec = "0.25, 0.5,1.0".parse().unwrap();
        assert_eq!(spec, LevelSpec::Ratios(vec![0.25, 0.5, 1.0]));
        assert_eq!(spec.to_string().parse::<LevelSpec>().unwrap(), spec);
        assert_eq!(spec.num_levels(), 3);
    }

    #[test]
    fn parses_explicit_counts() {
        let spec: LevelSpec = "conv1=8,16,32; fc1=32,64,128".parse().unwrap();
        let LevelSpec::Channels(layers) = &spec else { panic!("expected explicit counts") };
        assert_eq!(layers[1].layer, "fc1");
        assert_eq!(layers[1].widths, vec![32, 64, 128]);
        assert_eq!(spec.to_string().parse::<LevelSpec>().unwrap(), spec);
    }

    #[test]
    fn rejects_bad_ratios_with_the_level() {
        let err = "0.5,0.25,1.0".parse::<LevelSpec>().unwrap_err();
        assert_eq!(err, ScheduleError::RatiosNotIncreasing { level: 1, ratio: 0.25, previous: 0.5 });
        assert!(err.to_string().contains("level 1"), "{err}");
        let err = "0.5,1.5".parse::<LevelSpec>().unwrap_err();
        assert_eq!(err, ScheduleError::RatioOutOfRange { level: 1, ratio: 1.5 });
        let err = "0,1".parse::<LevelSpec>().unwrap_err();
        assert_eq!(err, ScheduleError::RatioOutOfRange { level: 0, ratio: 0.0 });
        let err = "0.25,0.5".parse::<LevelSpec>().unwrap_err();
        assert_eq!(err, ScheduleError::LastRatioNotFull { level: 1, ratio: 0.5 });
        let err = "0.25,NaN,1".parse::<LevelSpec>().unwrap_err();
        assert!(matches!(err, ScheduleError::RatioOutOfRange { level: 1, .. }));
        assert!(matches!("".parse::<LevelSpec>(), Err(ScheduleError::Empty)));
        assert!(matches!("a,1".parse::<LevelSpec>(), Err(ScheduleError::Parse { .. })));
    }

    #[test]
    fn rejects_ragged_or_repeated_layers() {
        let err = "conv1=8,32;fc1=32,64,128".parse::<LevelSpec>().unwrap_err();
        assert!(
            matches!(err, ScheduleError::LevelCountMismatch { ref layer, expected: 2, found: 3 } if layer == "fc1")
        );
        let err = "conv1=8,32;conv1=8,32".parse::<LevelSpec>().unwrap_err();
        assert!(matches!(err, ScheduleError::DuplicateLayer { .. }));
        let err = "conv1=8,x".parse::<LevelSpec>().unwrap_err();
        assert!(err.to_string().contains("`x` in layer `conv1`"), "{err}");
    }

    #[test]
    fn serde_round_trip() {
        let spec = LevelSpec::default_ratios();
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<LevelSpec>(&json).unwrap(), spec);
    }
}
