use serde::{Deserialize, Serialize};

use crate::{LevelSpec, Result, ScheduleError, check_level};

/// A layer whose output channels a model offers for scheduling.
///
/// Models list their layers in forward order; a layer's *input* width at level `k` is the
/// output width of the layer feeding it, so only output channels need scheduling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledLayer {
    /// Name used in level specifications and error messages (e.g. `conv1`).
    pub name: String,
    /// Output channels (or units) of the full layer.
    pub channels: usize,
    /// Whether the layer is split across levels. Unsplit layers (such as a classifier whose
    /// classes every level must predict) use all channels at every level.
    pub split: bool,
}

impl ScheduledLayer {
    /// A layer split across levels.
    pub fn split(name: impl Into<String>, channels: usize) -> Self {
        Self { name: name.into(), channels, split: true }
    }

    /// A layer every level uses whole.
    pub fn whole(name: impl Into<String>, channels: usize) -> Self {
        Self { name: name.into(), channels, split: false }
    }
}

/// Per-level output widths of one layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerWidths {
    /// The layer's name.
    pub name: String,
    /// Output channels of the full layer.
    pub channels: usize,
    /// Leading output channels used by each level, core first; the last equals `channels`.
    pub widths: Vec<usize>,
}

/// Channel scheduling: level `k` uses the leading `widths[k]` output channels of every layer
/// (the top-left block of each weight tensor). Nesting holds by construction because widths
/// never shrink from one level to the next.
///
/// Built only through [`ChannelSchedule::new`], so every value of this type is valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSchedule {
    num_levels: usize,
    layers: Vec<LayerWidths>,
}

impl ChannelSchedule {
    /// Validates `spec` against the model's `layers` and resolves every layer's widths.
    ///
    /// Ratios give `round(ratio · channels)` channels (ties away from zero). Errors name the
    /// layer and level: more levels than a layer has channels, a level with 0 channels, widths
    /// that shrink, a full level that does not use every channel, an unknown or missing layer,
    /// or two consecutive levels that are the same network.
    pub fn new(spec: &LevelSpec, layers: &[ScheduledLayer]) -> Result<Self> {
        Self::new_with(spec, layers, false)
    }

    /// [`new`](Self::new), optionally accepting consecutive levels of equal widths (for
    /// models whose levels also differ by their weight masks).
    pub fn new_with(spec: &LevelSpec, layers: &[ScheduledLayer], allow_equal_levels: bool) -> Result<Self> {
        spec.validate()?;
        let num_levels = spec.num_levels();
        let resolved = match spec {
            LevelSpec::Ratios(ratios) => layers
                .iter()
                .map(|layer| {
                    let widths = if layer.split {
                        check_room(layer, num_levels)?;
                        ratios.iter().map(|r| (r * layer.channels as f64).round() as usize).collect()
                    } else {
                        vec![layer.channels; num_levels]
                    };
                    Ok(LayerWidths { name: layer.name.clone(), channels: layer.channels, widths })
                })
                .collect::<Result<Vec<_>>>()?,
            LevelSpec::Channels(given) => {
                let known = || {
                    layers.iter().filter(|l| l.split).map(|l| l.name.as_str()).collect::<Vec<_>>().join(", ")
                };
                for g in given {
                    if !layers.iter().any(|l| l.split && l.name == g.layer) {
                        return Err(ScheduleError::UnknownLayer { layer: g.layer.clone(), known: known() });
                    }
                }
                layers
                    .iter()
                    .map(|layer| {
                        let widths = if layer.split {
                            check_room(layer, num_levels)?;
                            given
                                .iter()
                                .find(|g| g.layer == layer.name)
                                .ok_or_else(|| ScheduleError::MissingLayer { layer: layer.name.clone() })?
                                .widths
                                .clone()
                        } else {
                            vec![layer.channels; num_levels]
                        };
                        Ok(LayerWidths { name: layer.name.clone(), channels: layer.channels, widths })
                    })
                    .collect::<Result<Vec<_>>>()?
            }
        };
        for layer in &resolved {
            check_widths(layer)?;
        }
        for level in 1..num_levels {
            if !allow_equal_levels && resolved.iter().all(|l| l.widths[level] == l.widths[level - 1]) {
                return Err(ScheduleError::DuplicateLevel { level });
            }
        }
        Ok(Self { num_levels, layers: resolved })
    }

    /// Number of levels (at least 1).
    pub fn num_levels(&self) -> usize {
        self.num_levels
    }

    /// Every layer's widths, in the model's forward order.
    pub fn layers(&self) -> &[LayerWidths] {
        &self.layers
    }

    /// The per-level widths of the layer called `name`.
    pub fn widths(&self, name: &str) -> Option<&[usize]> {
        self.layers.iter().find(|l| l.name == name).map(|l| l.widths.as_slice())
    }

    /// Output width of layer `name` at `level`.
    pub fn width(&self, name: &str, level: usize) -> Result<usize> {
        check_level(level, self.num_levels)?;
        let widths = self.widths(name).ok_or_else(|| ScheduleError::UnknownLayer {
            layer: name.to_string(),
            known: self.layers.iter().map(|l| l.name.as_str()).collect::<Vec<_>>().join(", "),
        })?;
        Ok(widths[level])
    }
}

fn check_room(layer: &ScheduledLayer, num_levels: usize) -> Result<()> {
    if num_levels > layer.channels {
        return Err(ScheduleError::TooManyLevels {
            layer: layer.name.clone(),
            levels: num_levels,
            channels: layer.channels,
        });
    }
    Ok(())
}

fn check_widths(layer: &LayerWidths) -> Result<()> {
    let name = || layer.name.clone();
    for (level, &width) in layer.widths.iter().enumerate() {
        if width == 0 {
            return Err(ScheduleError::ZeroChannels { layer: name(), level });
        }
        if width > layer.channels {
            return Err(ScheduleError::ExceedsChannels {
                layer: name(),
                level,
                width,
                channels: layer.channels,
            });
        }
        if level > 0 && width < layer.widths[level - 1] {
            return Err(ScheduleError::NotIncreasing {
                layer: name(),
                level,
                width,
                previous: layer.widths[level - 1],
            });
        }
    }
    let last = layer.widths.len() - 1;
    if layer.widths[last] != layer.channels {
        return Err(ScheduleError::LastLevelNotFull {
            layer: name(),
            level: last,
            width: layer.widths[last],
            channels: layer.channels,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mnist_layers() -> Vec<ScheduledLayer> {
        vec![
            ScheduledLayer::split("conv1", 32),
            ScheduledLayer::split("conv2", 64),
            ScheduledLayer::split("fc1", 128),
            ScheduledLayer::whole("fc2", 10),
        ]
    }

    #[test]
    fn ratios_resolve_per_layer() {
        let s = ChannelSchedule::new(&LevelSpec::default_ratios(), &mnist_layers()).unwrap();
        assert_eq!(s.num_levels(), 3);
        assert_eq!(s.widths("conv1").unwrap(), &[8, 16, 32]);
        assert_eq!(s.widths("conv2").unwrap(), &[16, 32, 64]);
        assert_eq!(s.widths("fc1").unwrap(), &[32, 64, 128]);
        assert_eq!(s.widths("fc2").unwrap(), &[10, 10, 10]);
        assert_eq!(s.width("conv2", 1).unwrap(), 32);
        assert_eq!(
            s.width("conv2", 3).unwrap_err(),
            ScheduleError::LevelOutOfRange { level: 3, num_levels: 3 }
        );
    }

    #[test]
    fn single_level_is_the_plain_network() {
        let s = ChannelSchedule::new(&LevelSpec::Ratios(vec![1.0]), &mnist_layers()).unwrap();
        assert_eq!(s.widths("conv1").unwrap(), &[32]);
    }

    #[test]
    fn ratio_giving_zero_channels_names_layer_and_level() {
        let layers = vec![ScheduledLayer::split("conv1", 4), ScheduledLayer::split("fc1", 100)];
        let err = ChannelSchedule::new(&LevelSpec::Ratios(vec![0.1, 1.0]), &layers).unwrap_err();
        assert_eq!(err, ScheduleError::ZeroChannels { layer: "conv1".into(), level: 0 });
        assert!(err.to_string().contains("`conv1`, level 0"), "{err}");
    }

    #[test]
    fn more_levels_than_channels_is_rejected() {
        let layers = vec![ScheduledLayer::split("tiny", 2)];
        let err = ChannelSchedule::new(&LevelSpec::Ratios(vec![0.3, 0.6, 1.0]), &layers).unwrap_err();
        assert_eq!(err, ScheduleError::TooManyLevels { layer: "tiny".into(), levels: 3, channels: 2 });
    }

    #[test]
    fn explicit_counts_are_checked_per_layer_and_level() {
        let ok: LevelSpec = "conv1=8,16,32;conv2=16,32,64;fc1=32,64,128".parse().unwrap();
        let s = ChannelSchedule::new(&ok, &mnist_layers()).unwrap();
        assert_eq!(s.widths("fc1").unwrap(), &[32, 64, 128]);

        let shrinking: LevelSpec = "conv1=8,16,32;conv2=32,16,64;fc1=32,64,128".parse().unwrap();
        let err = ChannelSchedule::new(&shrinking, &mnist_layers()).unwrap_err();
        assert_eq!(
            err,
            ScheduleError::NotIncreasing { layer: "conv2".into(), level: 1, width: 16, previous: 32 }
        );

        let zero: LevelSpec = "conv1=0,16,32;conv2=16,32,64;fc1=32,64,128".parse().unwrap();
        let err = ChannelSchedule::new(&zero, &mnist_layers()).unwrap_err();
        assert_eq!(err, ScheduleError::ZeroChannels { layer: "conv1".into(), level: 0 });

        let too_wide: LevelSpec = "conv1=8,16,33;conv2=16,32,64;fc1=32,64,128".parse().unwrap();
        let err = ChannelSchedule::new(&too_wide, &mnist_layers()).unwrap_err();
        assert!(matches!(err, ScheduleError::ExceedsChannels { level: 2, width: 33, .. }));

        let not_full: LevelSpec = "conv1=8,16,31;conv2=16,32,64;fc1=32,64,128".parse().unwrap();
        let err = ChannelSchedule::new(&not_full, &mnist_layers()).unwrap_err();
        assert!(matches!(err, ScheduleError::LastLevelNotFull { level: 2, width: 31, .. }));

        let missing: LevelSpec = "conv1=8,16,32;fc1=32,64,128".parse().unwrap();
        let err = ChannelSchedule::new(&missing, &mnist_layers()).unwrap_err();
        assert_eq!(err, ScheduleError::MissingLayer { layer: "conv2".into() });

        let unknown: LevelSpec = "conv9=8,16,32".parse().unwrap();
        let err = ChannelSchedule::new(&unknown, &mnist_layers()).unwrap_err();
        assert!(err.to_string().contains("conv9") && err.to_string().contains("conv1"), "{err}");

        let unsplit: LevelSpec = "conv1=8,16,32;conv2=16,32,64;fc1=32,64,128;fc2=5,10,10".parse().unwrap();
        assert!(matches!(
            ChannelSchedule::new(&unsplit, &mnist_layers()),
            Err(ScheduleError::UnknownLayer { .. })
        ));

        let dup: LevelSpec = "conv1=8,8,32;conv2=16,16,64;fc1=32,32,128".parse().unwrap();
        let err = ChannelSchedule::new(&dup, &mnist_layers()).unwrap_err();
        assert_eq!(err, ScheduleError::DuplicateLevel { level: 1 });
        // Levels that differ by their masks only may share their widths.
        let same: LevelSpec = "1,1,1".parse().unwrap();
        assert!(ChannelSchedule::new(&same, &mnist_layers()).is_err());
        let s = ChannelSchedule::new_with(&same, &mnist_layers(), true).unwrap();
        assert_eq!(s.widths("conv1").unwrap(), &[32, 32, 32]);
    }
}
