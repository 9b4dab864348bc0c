use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{DataError, ImageSet, Normalization, Result};

/// Magic number of idx image files (unsigned bytes, 3 dimensions).
const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of idx label files (unsigned bytes, 1 dimension).
const LABELS_MAGIC: u32 = 0x0000_0801;

/// An idx array of unsigned bytes: its dimensions and data.
#[derive(Debug, Clone)]
pub struct IdxArray {
    /// Dimensions from the header.
    pub dims: Vec<usize>,
    /// `product(dims)` bytes.
    pub data: Vec<u8>,
}

/// Reads a whole file, gunzipping it if it starts with the gzip magic bytes (whatever its name).
pub(crate) fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let io = |source| DataError::Io { path: path.to_path_buf(), source };
    let raw = std::fs::read(path).map_err(io)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(raw.as_slice()).read_to_end(&mut out).map_err(|e| {
            DataError::BadSize {
                path: path.to_path_buf(),
                reason: format!("corrupt or truncated gzip stream: {e}"),
            }
        })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Reads an idx file of unsigned bytes (`.gz` or raw) and checks its header against the data:
/// the magic number must be `expected_magic`, and the file must hold exactly the bytes the
/// dimensions announce.
pub fn read_idx(path: &Path, expected_magic: u32, what: &'static str) -> Result<IdxArray> {
    let bytes = read_maybe_gz(path)?;
    let bad = |reason: String| DataError::BadSize { path: path.to_path_buf(), reason };
    if bytes.len() < 4 {
        return Err(bad(format!("{} bytes is too short for an idx header", bytes.len())));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if magic != expected_magic {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            expected: expected_magic,
            found: magic,
            what,
        });
    }
    let ndim = (magic & 0xff) as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(bad(format!("truncated header: {} bytes, need {header}", bytes.len())));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let expected = dims.iter().product::<usize>();
    let found = bytes.len() - header;
    if found < expected {
        return Err(bad(format!(
            "truncated: header announces {dims:?} = {expected} bytes of data, file has {found}"
        )));
    }
    if found > expected {
        return Err(bad(format!(
            "{} unexpected bytes after the {expected} bytes of data announced by {dims:?}",
            found - expected
        )));
    }
    Ok(IdxArray { dims, data: bytes[header..].to_vec() })
}

/// MNIST in the idx format (any image size), 10 classes.
pub struct Mnist;

impl Mnist {
    /// Loads `train-*` and `t10k-*` images and labels from `dir`, `.gz` or raw.
    pub fn load(dir: &Path) -> Result<(ImageSet, ImageSet)> {
        let train =
            Self::load_split(&find(dir, "train-images-idx3-ubyte")?, &find(dir, "train-labels-idx1-ubyte")?)?;
        let test =
            Self::load_split(&find(dir, "t10k-images-idx3-ubyte")?, &find(dir, "t10k-labels-idx1-ubyte")?)?;
        Ok((train, test))
    }

    /// Loads one images file and its labels file, checking that they agree.
    pub fn load_split(images_path: &Path, labels_path: &Path) -> Result<ImageSet> {
        let images = read_idx(images_path, IMAGES_MAGIC, "idx images, u8, 3 dimensions")?;
        let labels = read_idx(labels_path, LABELS_MAGIC, "idx labels, u8, 1 dimension")?;
        let (count, height, width) = (images.dims[0], images.dims[1], images.dims[2]);
        if height == 0 || width == 0 {
            return Err(DataError::BadSize {
                path: images_path.to_path_buf(),
                reason: format!("images of {height}x{width} pixels"),
            });
        }
        if labels.dims[0] != count {
            return Err(DataError::CountMismatch {
                images_path: images_path.to_path_buf(),
                images: count,
                labels_path: labels_path.to_path_buf(),
                labels: labels.dims[0],
            });
        }
        let labels = labels.data.iter().map(|&l| l as usize).collect::<Vec<_>>();
        if let Some((index, &label)) = labels.iter().enumerate().find(|(_, l)| **l >= 10) {
            return Err(DataError::LabelOutOfRange {
                path: labels_path.to_path_buf(),
                index,
                label,
                num_classes: 10,
            });
        }
        // MNIST's usual statistics for MNIST itself; other digit sets in the same format
        // (8x8 digits, say) are normalised with their own.
        let normalization = if (height, width) == (28, 28) {
            Normalization::mnist()
        } else {
            Normalization::measure(&images.data, 1, height * width)
        };
        Ok(ImageSet {
            pixels: images.data,
            labels,
            coarse_labels: None,
            channels: 1,
            height,
            width,
            num_classes: 10,
            num_coarse_classes: 0,
            normalization,
            class_names: (0..10).map(|d| d.to_string()).collect(),
        })
    }
}

/// `dir/stem.gz` or `dir/stem`, whichever exists (gzip first).
fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    let tried = vec![dir.join(format!("{stem}.gz")), dir.join(stem)];
    tried.iter().find(|p| p.is_file()).cloned().ok_or(DataError::Missing { tried })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = magic.to_be_bytes().to_vec();
        for d in dims {
            out.extend(d.to_be_bytes());
        }
        out.extend(data);
        out
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn write_split(dir: &Path, prefix: &str, n: u32, h: u32, w: u32, labels: &[u8], compress: bool) {
        let pixels: Vec<u8> = (0..n * h * w).map(|i| (i % 251) as u8).collect();
        let imgs = idx(IMAGES_MAGIC, &[n, h, w], &pixels);
        let labs = idx(LABELS_MAGIC, &[labels.len() as u32], labels);
        let (imgs, labs, ext) = if compress { (gz(&imgs), gz(&labs), ".gz") } else { (imgs, labs, "") };
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{ext}")), imgs).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")), labs).unwrap();
    }

    #[test]
    fn loads_raw_and_gz_of_any_size() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), "train", 3, 5, 7, &[1, 2, 9], true);
        write_split(dir.path(), "t10k", 2, 5, 7, &[0, 3], false);
        let (train, test) = Mnist::load(dir.path()).unwrap();
        assert_eq!((train.len(), train.height, train.width), (3, 5, 7));
        assert_eq!(train.labels, vec![1, 2, 9]);
        assert_eq!(test.labels, vec![0, 3]);
        assert_eq!(train.image(1)[0], 35);
        train.validate().unwrap();
    }

    #[test]
    fn bad_files_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = Mnist::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("train-images-idx3-ubyte.gz"), "{err}");

        // Labels disagree with images.
        write_split(dir.path(), "train", 3, 4, 4, &[1, 2], false);
        write_split(dir.path(), "t10k", 1, 4, 4, &[1], false);
        let err = Mnist::load(dir.path()).unwrap_err();
        assert!(matches!(err, DataError::CountMismatch { images: 3, labels: 2, .. }), "{err}");

        // Truncated images.
        let p = dir.path().join("train-images-idx3-ubyte");
        let full = idx(IMAGES_MAGIC, &[3, 4, 4], &[0; 48]);
        std::fs::write(&p, &full[..40]).unwrap();
        let err = read_idx(&p, IMAGES_MAGIC, "images").unwrap_err().to_string();
        assert!(err.contains("train-images-idx3-ubyte") && err.contains("truncated"), "{err}");

        // Trailing bytes.
        let mut long = full.clone();
        long.push(0);
        std::fs::write(&p, &long).unwrap();
        let err = read_idx(&p, IMAGES_MAGIC, "images").unwrap_err().to_string();
        assert!(err.contains("1 unexpected bytes"), "{err}");

        // Labels file given where images are expected.
        let l = dir.path().join("train-labels-idx1-ubyte");
        let err = read_idx(&l, IMAGES_MAGIC, "images").unwrap_err();
        assert!(matches!(err, DataError::BadMagic { found: LABELS_MAGIC, .. }), "{err}");

        // Corrupt gzip.
        let g = dir.path().join("corrupt.gz");
        let mut bytes = gz(&full);
        bytes.truncate(bytes.len() / 2);
        std::fs::write(&g, bytes).unwrap();
        let err = read_idx(&g, IMAGES_MAGIC, "images").unwrap_err().to_string();
        assert!(err.contains("corrupt.gz") && err.contains("gzip"), "{err}");

        // Label out of range.
        std::fs::write(&p, &full).unwrap();
        std::fs::write(&l, idx(LABELS_MAGIC, &[3], &[1, 12, 0])).unwrap();
        let err = Mnist::load(dir.path()).unwrap_err();
        assert!(matches!(err, DataError::LabelOutOfRange { index: 1, label: 12, .. }), "{err}");
    }
}
